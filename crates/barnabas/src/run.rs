//! The process lifecycle: plan from config, start (embedded broker, listeners, Kafka clients),
//! report readiness, and stop on SIGTERM/SIGINT by one mechanism — a cancellation token every
//! task watches, a grace period, then a bounded producer flush.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use barnabas_core::{Backend, DriverLimits, GatewayMetrics, MetricsRegistry, Readiness, Services};
use barnabas_kafka::KafkaConfig;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::RunArgs,
    config::{self, Config},
    logging,
};

/// How long in-flight requests may take to finish after a stop signal, and how long the
/// producer may take to deliver what it holds.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How often Kafka is asked whether it is there, for `/ready`.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// Why the process ends unsuccessfully.
#[derive(Debug)]
pub enum Failure {
    /// Bad configuration or an address that cannot be bound: exit code 2.
    Config(String),
    /// Anything else: exit code 1.
    Fatal(anyhow::Error),
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure::Config(e.0)
    }
}

/// The embedded broker the plan asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedPlan {
    /// Where it listens.
    pub listen: SocketAddr,
    /// What it advertises, if not derived from `listen`.
    pub advertised: Option<String>,
    /// Where its data lives (`None` = temporary).
    pub data_dir: Option<PathBuf>,
    /// Acknowledge and discard every write (`--embedded-storage null`, benchmarks only).
    pub discard: bool,
}

/// Everything decided before anything starts: validated config and whether to embed Kafka.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The effective configuration.
    pub config: Config,
    /// `Some` when the gateway runs its own broker.
    pub embedded: Option<EmbeddedPlan>,
}

impl Plan {
    /// Loads and validates the layered config and decides about the embedded broker.
    pub fn from_args(args: &RunArgs) -> Result<Self, Failure> {
        let overrides = args.overrides();
        let file = args.config.as_deref();
        let config = Config::load(file, &overrides)?;
        let external = config::names_kafka_cluster(file, &overrides);
        if args.embedded_kafka.is_some() && args.kafka_bootstrap.is_some() {
            return Err(Failure::Config(
                "--embedded-kafka and --kafka-bootstrap exclude each other: use one Kafka".into(),
            ));
        }
        let embed = args.embedded_kafka.is_some() || !external;
        if !embed && args.data_dir.is_some() {
            return Err(Failure::Config(
                "--data-dir keeps the embedded broker's data; it does not apply with an external Kafka (kafka.bootstrap_servers)".into(),
            ));
        }
        let discard = args.embedded_storage == Some(crate::cli::EmbeddedStorage::Null);
        if discard && (!embed || args.data_dir.is_some()) {
            return Err(Failure::Config(
                "--embedded-storage null discards everything: it excludes --data-dir and an external Kafka".into(),
            ));
        }
        let embedded = if embed {
            let addr = args.embedded_kafka.as_deref().unwrap_or("127.0.0.1:9092");
            let listen = config::parse_listen("--embedded-kafka", addr)?.ok_or_else(|| {
                Failure::Config("--embedded-kafka: needs an address, not 'off'".into())
            })?;
            Some(EmbeddedPlan {
                listen,
                advertised: args.embedded_advertised.clone(),
                data_dir: args.data_dir.clone(),
                discard,
            })
        } else {
            None
        };
        Ok(Plan { config, embedded })
    }
}

/// `barnabas check-config`: print the effective config (TOML) on stdout.
pub fn check_config(args: RunArgs) -> Result<(), Failure> {
    let plan = Plan::from_args(&args)?;
    let mut out = String::new();
    if let Some(e) = &plan.embedded {
        out.push_str(&format!(
            "# Kafka: embedded broker on {} ({})\n",
            e.listen,
            e.data_dir
                .as_ref()
                .map(|d| format!("data in {}", d.display()))
                .unwrap_or_else(|| "nothing kept after exit".into())
        ));
    }
    for warning in plan.config.warnings() {
        out.push_str(&format!("# warning: {warning}\n"));
        eprintln!("warning: {warning}");
    }
    out.push_str(&plan.config.to_toml()?);
    print!("{out}");
    Ok(())
}

/// `barnabas hash-password`: reads one password line on stdin, prints its argon2id hash.
pub fn hash_password() -> Result<(), Failure> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::Fatal(e.into()))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(Failure::Config(
            "hash-password: empty password on stdin".into(),
        ));
    }
    let salt = uuid::Uuid::new_v4();
    let hash = barnabas_core::auth::hash_password(password.as_bytes(), salt.as_bytes())
        .map_err(|e| Failure::Fatal(anyhow::anyhow!(e)))?;
    println!("{hash}");
    Ok(())
}

/// `barnabas [run]`: start, serve until a stop signal, drain, exit.
pub fn run(args: RunArgs) -> Result<(), Failure> {
    let plan = Plan::from_args(&args)?;
    logging::init(args.log_format.unwrap_or_default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("barnabas")
        .build()
        .map_err(|e| Failure::Fatal(e.into()))?;
    let outcome = runtime.block_on(async move {
        let gateway = Gateway::start(plan).await?;
        let signal = stop_signal().await;
        tracing::info!(
            signal,
            "stopping: no new connections, draining in-flight work"
        );
        gateway.shutdown().await;
        Ok(())
    });
    // Everything acknowledged is flushed by now. A Kafka consumer still leaving its group on
    // a blocking thread (librdkafka's close has no deadline of its own) must not keep the
    // process from exiting.
    runtime.shutdown_timeout(EXIT_WAIT);
    outcome
}

/// How long the exit waits for blocking work still running after the drain.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves on SIGTERM or SIGINT, naming which.
/// Reloads the TLS certificate and key on every SIGHUP until shutdown; connections already
/// open keep theirs, and a file that does not load leaves the previous certificate in use.
async fn reload_tls_on_sighup(
    tls: std::sync::Arc<barnabas_core::tls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP; TLS certificates reload only on restart");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup.recv() => match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded (SIGHUP)"),
                    Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use"),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tls;
        shutdown.cancelled().await;
    }
}

async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// A running gateway: its tasks, its Kafka clients and (maybe) its broker.
pub struct Gateway {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    backend: Backend,
    http: barnabas_http::AppState,
    readiness: Readiness,
    http_addr: Option<SocketAddr>,
    mqtt_addr: Option<SocketAddr>,
    mqtt_ws_addr: Option<SocketAddr>,
    amqp_addr: Option<SocketAddr>,
    #[cfg(feature = "embedded-kafka")]
    embedded: Option<crate::embedded::EmbeddedKafka>,
}

impl Gateway {
    /// Starts everything the plan names. Fails with `Failure::Config` for an address that
    /// cannot be bound or a Kafka property librdkafka rejects; every part of the config is
    /// checked before anything starts.
    pub async fn start(plan: Plan) -> Result<Self, Failure> {
        let Plan { config, embedded } = plan;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let mut kafka = config.kafka.clone();
        kafka
            .resolve_secret_files()
            .map_err(|e| Failure::Config(e.to_string()))?;
        tune_producer_limits(&mut kafka, config.limits.max_message_bytes);
        #[cfg(feature = "embedded-kafka")]
        let embedded = start_embedded_for(embedded, &mut kafka).await?;
        #[cfg(not(feature = "embedded-kafka"))]
        refuse_embedded(embedded)?;

        let listeners = Listeners::bind(&config).await?;
        let (mapper, sources) = (config.mqtt.mapper()?, sse_sources(&config)?);
        let services = services(&config, &kafka)?;
        let readiness = Readiness::new();
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let http_settings = http_settings(&config, listeners.http_addr);
        let http = barnabas_http::AppState::new(
            &services,
            readiness.clone(),
            crate::VERSION,
            http_settings,
            shutdown.clone(),
        );
        barnabas_http::start(&http, listeners.http, &mut tasks);
        if listeners.mqtt.any() {
            let ctx = barnabas_mqtt::MqttContext::new(
                &services,
                mapper,
                mqtt_settings(&config),
                &shutdown,
            );
            barnabas_mqtt::start(&ctx, listeners.mqtt, &mut tasks, &shutdown);
        }
        if listeners.amqp.any() {
            let ctx = barnabas_amqp::AmqpContext::new(&services, amqp_settings(&config));
            barnabas_amqp::start(&ctx, listeners.amqp, &mut tasks, &shutdown);
        }
        barnabas_sse::start(&services, sources, &mut tasks, &shutdown);
        if let Some(tls) = services.tls.clone() {
            tasks.spawn(reload_tls_on_sighup(tls, shutdown.clone()));
        }
        tasks.spawn(watch_kafka(
            services.backend.clone(),
            readiness.clone(),
            shutdown.clone(),
            listeners.http_addr,
            kafka.bootstrap_servers.clone(),
        ));

        Ok(Self {
            shutdown,
            tasks,
            backend: services.backend,
            http,
            readiness,
            http_addr: listeners.http_addr,
            mqtt_addr: listeners.mqtt_addr,
            mqtt_ws_addr: listeners.mqtt_ws_addr,
            amqp_addr: listeners.amqp_addr,
            #[cfg(feature = "embedded-kafka")]
            embedded,
        })
    }

    /// Where the HTTP listener is bound, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Where the MQTT listener is bound, if it is on.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// Where the AMQP listener is bound, if it is on.
    pub fn amqp_addr(&self) -> Option<SocketAddr> {
        self.amqp_addr
    }

    /// Where the MQTT-over-WebSocket listener is bound, if it is on.
    pub fn mqtt_ws_addr(&self) -> Option<SocketAddr> {
        self.mqtt_ws_addr
    }

    /// The Kafka backend front ends use.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The readiness flag `/ready` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Stops accepting, lets in-flight work finish within [`DRAIN_GRACE`], delivers what the
    /// producer holds, then stops the embedded broker.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("drain grace period over; aborting remaining tasks");
            self.tasks.abort_all();
        }
        // Consumer instances leave their groups now, so partitions move at once; every other
        // consumer (SSE streams) must be gone too before an embedded broker stops.
        self.http.close_consumers().await;
        if !self.backend.consumers.drain(DRAIN_GRACE).await {
            tracing::warn!("some Kafka consumers were still closing at exit");
        }
        if let Err(e) = self.backend.publisher.flush(DRAIN_GRACE).await {
            tracing::warn!(error = %e, "producer did not deliver everything before exit");
        }
        // Close the Kafka clients before their broker goes, so they do not log its absence.
        // (The HTTP state holds clients too: it goes first.)
        #[cfg(feature = "embedded-kafka")]
        let Self {
            backend,
            embedded,
            http,
            ..
        } = self;
        #[cfg(not(feature = "embedded-kafka"))]
        let Self { backend, http, .. } = self;
        drop(http);
        drop(backend);
        #[cfg(feature = "embedded-kafka")]
        if let Some(broker) = embedded {
            broker.stop().await;
        }
        tracing::info!("barnabas stopped");
    }
}

/// The HTTP front end's settings from `[http]` and `[limits]`.
fn http_settings(
    config: &Config,
    bound: Option<std::net::SocketAddr>,
) -> barnabas_http::HttpSettings {
    let records = config.http.consumer_buffer_records;
    let advertised = if config.http.advertised_address.is_empty() {
        bound.map_or_else(String::new, |mut addr| {
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            addr.to_string()
        })
    } else {
        config.http.advertised_address.clone()
    };
    barnabas_http::HttpSettings {
        consumer_idle_timeout: config.http.consumer_idle_timeout_ms.duration(),
        max_body_bytes: config.limits.max_message_bytes,
        cors_origins: config.http.cors_origins.clone(),
        driver_limits: DriverLimits {
            max_records: records,
            max_bytes: DriverLimits::default()
                .max_bytes
                .max(config.limits.max_message_bytes * 2),
            poll_batch: records.clamp(1, 500),
        },
        sse_keep_alive: config.http.sse_keep_alive_ms.duration(),
        advertised_url: format!("http://{advertised}"),
        publish_rate: config.limits.publish_rate,
        max_consumers_per_principal: config.limits.max_consumers_per_principal,
        max_topic_partitions: config.limits.max_topic_partitions,
        header_read_timeout: config
            .http
            .header_read_timeout_ms
            .duration()
            .max(Duration::from_millis(1)),
        max_connections: config.limits.max_connections,
    }
}

/// The process-wide pieces every front end is built with: the Kafka clients, the metrics,
/// one principal model (authenticator and failed-login throttle) and one TLS configuration.
fn services(config: &Config, kafka: &KafkaConfig) -> Result<Services, Failure> {
    let tls = config.tls_acceptor()?;
    let registry = MetricsRegistry::new();
    let gateway_metrics = GatewayMetrics::new(&registry);
    let auth = config.authenticator()?.counting_in(&gateway_metrics);
    let backend = barnabas_kafka::connect(kafka)
        .map_err(|e| Failure::Config(format!("kafka.properties: {e}")))?;
    Ok(Services {
        backend,
        gateway_metrics,
        registry,
        auth: std::sync::Arc::new(auth),
        tls,
    })
}

/// The MQTT front end's settings from `[mqtt]` and `[limits]`.
fn mqtt_settings(config: &Config) -> barnabas_mqtt::MqttSettings {
    let limits = &config.limits;
    barnabas_mqtt::MqttSettings {
        max_message_bytes: limits.max_message_bytes,
        connect_timeout: Duration::from_secs(5),
        receive_window: 1024,
        max_connections: limits.max_connections,
        publish_rate: limits.publish_rate,
        max_subscriptions: limits.max_subscriptions,
        kafka_metadata: config.mqtt.kafka_metadata,
        server_keep_alive: std::num::NonZeroU16::new(config.mqtt.server_keep_alive_secs),
        max_sessions: limits.max_sessions,
        max_consumers_per_connection: limits.max_consumers_per_connection,
        ws_allowed_origins: config.mqtt.ws_allowed_origins.clone(),
        max_retained_bytes: limits.max_retained_bytes,
        topic_refresh: config
            .mqtt
            .topic_refresh_ms
            .duration()
            .max(Duration::from_millis(100)),
    }
}

/// The AMQP front end's settings from `[limits]` and `[kafka]`.
fn amqp_settings(config: &Config) -> barnabas_amqp::AmqpSettings {
    let limits = &config.limits;
    barnabas_amqp::AmqpSettings {
        max_message_bytes: limits.max_message_bytes,
        max_frame_size: 65_536,
        channel_max: 255,
        idle_timeout_ms: 60_000,
        open_timeout: Duration::from_secs(5),
        max_connections: limits.max_connections,
        publish_rate: limits.publish_rate,
        max_consumers_per_connection: limits.max_consumers_per_connection,
        auto_create_topics: config.kafka.auto_create_topics,
    }
}

/// The SSE sources of `[[sources.sse]]`.
fn sse_sources(config: &Config) -> Result<Vec<barnabas_sse::SourceSpec>, Failure> {
    let spec = |source: &config::SseSource| {
        let key = barnabas_sse::KeyRule::parse(&source.key)
            .map_err(|e| Failure::Config(format!("sources.sse key '{}': {e}", source.key)))?;
        Ok(barnabas_sse::SourceSpec {
            url: source.url.clone(),
            topic: source.topic.clone(),
            key,
            idle_timeout: source.idle_timeout_ms.duration(),
        })
    };
    config.sources.sse.iter().map(spec).collect()
}

/// Every listener the config turns on, bound before anything starts (a busy port is a
/// start-up error naming its key), and where the ones the caller may ask about are bound.
struct Listeners {
    http: barnabas_http::HttpListeners,
    mqtt: barnabas_mqtt::MqttListeners,
    amqp: barnabas_amqp::AmqpListeners,
    http_addr: Option<SocketAddr>,
    mqtt_addr: Option<SocketAddr>,
    mqtt_ws_addr: Option<SocketAddr>,
    amqp_addr: Option<SocketAddr>,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Self, Failure> {
        let http = barnabas_http::HttpListeners {
            plain: bind("http.listen", &config.http.listen).await?,
            tls: bind("http.tls_listen", &config.http.tls_listen).await?,
        };
        let mqtt = barnabas_mqtt::MqttListeners {
            tcp: bind("mqtt.listen", &config.mqtt.listen).await?,
            websocket: bind("mqtt.ws_listen", &config.mqtt.ws_listen).await?,
            tls: bind("mqtt.tls_listen", &config.mqtt.tls_listen).await?,
            secure_websocket: bind("mqtt.wss_listen", &config.mqtt.wss_listen).await?,
        };
        let amqp = barnabas_amqp::AmqpListeners {
            tcp: bind("amqp.listen", &config.amqp.listen).await?,
            tls: bind("amqp.tls_listen", &config.amqp.tls_listen).await?,
        };
        let addr = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        Ok(Self {
            http_addr: addr(&http.plain),
            mqtt_addr: addr(&mqtt.tcp),
            mqtt_ws_addr: addr(&mqtt.websocket),
            amqp_addr: addr(&amqp.tcp),
            http,
            mqtt,
            amqp,
        })
    }
}

/// librdkafka refuses records above its `message.max.bytes` (default 1 000 000) before the
/// gateway's own limit would apply; raise it to the gateway limit plus room for the batch
/// framing, unless the operator set it.
fn tune_producer_limits(kafka: &mut KafkaConfig, max_message_bytes: usize) {
    kafka
        .properties
        .entry("message.max.bytes".into())
        .or_insert_with(|| (max_message_bytes.max(1_000_000) + 65_536).to_string());
}

/// The embedded broker, when the plan asks for one: `kafka` then points at it.
#[cfg(feature = "embedded-kafka")]
async fn start_embedded_for(
    plan: Option<EmbeddedPlan>,
    kafka: &mut KafkaConfig,
) -> Result<Option<crate::embedded::EmbeddedKafka>, Failure> {
    let Some(plan) = plan else { return Ok(None) };
    let broker = start_embedded(&plan).await?;
    kafka.bootstrap_servers = broker.bootstrap();
    if kafka.default_replication_factor == -1 {
        kafka.default_replication_factor = 1; // a single-node broker
    }
    Ok(Some(broker))
}

/// A build without the embedded broker cannot follow a plan that needs it.
#[cfg(not(feature = "embedded-kafka"))]
fn refuse_embedded(plan: Option<EmbeddedPlan>) -> Result<(), Failure> {
    match plan {
        Some(_) => Err(Failure::Config(
            "this build has no embedded Kafka broker (built without feature `embedded-kafka`): set kafka.bootstrap_servers or --kafka-bootstrap".into(),
        )),
        None => Ok(()),
    }
}

#[cfg(feature = "embedded-kafka")]
async fn start_embedded(plan: &EmbeddedPlan) -> Result<crate::embedded::EmbeddedKafka, Failure> {
    use crate::embedded::{EmbeddedError, EmbeddedKafka, Storage};
    let storage = match (&plan.data_dir, plan.discard) {
        (_, true) => Storage::Null,
        (Some(dir), false) => Storage::Dir(dir.clone()),
        (None, false) => Storage::Temporary,
    };
    EmbeddedKafka::start(plan.listen, plan.advertised.clone(), storage)
        .await
        .map_err(|e| match e {
            EmbeddedError::Bind { .. } | EmbeddedError::DataDir { .. } => {
                Failure::Config(e.to_string())
            }
            EmbeddedError::Broker(_) => Failure::Fatal(e.into()),
        })
}

/// Binds a listener now, so a busy port is a start-up error naming the key.
async fn bind(key: &str, value: &str) -> Result<Option<TcpListener>, Failure> {
    let Some(addr) = config::parse_listen(key, value)? else {
        return Ok(None);
    };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| Failure::Config(format!("cannot listen on {key} {addr}: {e}")))
}

/// Keeps `/ready` true to Kafka's state and prints the ready line the first time Kafka answers.
async fn watch_kafka(
    backend: Backend,
    readiness: Readiness,
    shutdown: CancellationToken,
    http_addr: Option<SocketAddr>,
    bootstrap: String,
) {
    let mut announced = false;
    let mut last_error: Option<String> = None;
    loop {
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = backend.admin.ping(Duration::from_secs(2)) => answer,
        };
        match answer {
            Ok(()) => {
                if !announced {
                    announced = true;
                    let http = http_addr
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "off".into());
                    tracing::info!(http = %http, kafka = %bootstrap, "barnabas ready");
                } else if last_error.is_some() {
                    tracing::info!(kafka = %bootstrap, "Kafka answers again");
                }
                last_error = None;
                readiness.set(true);
            }
            Err(e) => {
                readiness.set(false);
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(kafka = %bootstrap, error = %msg, "Kafka does not answer");
                }
                last_error = Some(msg);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(READINESS_INTERVAL) => {}
        }
    }
}

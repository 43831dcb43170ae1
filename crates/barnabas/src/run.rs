//! The process lifecycle: plan from config, start (embedded broker, listeners, Kafka clients),
//! report readiness, and stop on SIGTERM/SIGINT by one mechanism — a cancellation token every
//! task watches, a grace period, then a bounded producer flush.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use barnabas_core::{Backend, DriverLimits, GatewayMetrics, MetricsRegistry, Readiness};
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
    /// cannot be bound or a Kafka property librdkafka rejects.
    pub async fn start(plan: Plan) -> Result<Self, Failure> {
        let Plan { config, embedded } = plan;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let mut kafka = config.kafka.clone();
        kafka.resolve_secret_files().map_err(Failure::Config)?;
        tune_producer_limits(&mut kafka, config.limits.max_message_bytes);

        #[cfg(feature = "embedded-kafka")]
        let embedded = match embedded {
            Some(plan) => {
                let broker = start_embedded(&plan).await?;
                kafka.bootstrap_servers = broker.bootstrap();
                if kafka.default_replication_factor == -1 {
                    kafka.default_replication_factor = 1; // a single-node broker
                }
                Some(broker)
            }
            None => None,
        };
        #[cfg(not(feature = "embedded-kafka"))]
        if embedded.is_some() {
            return Err(Failure::Config(
                "this build has no embedded Kafka broker (built without feature `embedded-kafka`): set kafka.bootstrap_servers or --kafka-bootstrap".into(),
            ));
        }

        let http_listener = bind("http.listen", &config.http.listen).await?;
        let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
        let mqtt_listener = bind("mqtt.listen", &config.mqtt.listen).await?;
        let mqtt_addr = mqtt_listener.as_ref().and_then(|l| l.local_addr().ok());
        let mqtt_ws_listener = bind("mqtt.ws_listen", &config.mqtt.ws_listen).await?;
        let mqtt_ws_addr = mqtt_ws_listener.as_ref().and_then(|l| l.local_addr().ok());
        let amqp_listener = bind("amqp.listen", &config.amqp.listen).await?;
        let amqp_addr = amqp_listener.as_ref().and_then(|l| l.local_addr().ok());
        let https_listener = bind("http.tls_listen", &config.http.tls_listen).await?;
        let mqtts_listener = bind("mqtt.tls_listen", &config.mqtt.tls_listen).await?;
        let wss_listener = bind("mqtt.wss_listen", &config.mqtt.wss_listen).await?;
        let amqps_listener = bind("amqp.tls_listen", &config.amqp.tls_listen).await?;
        let tls = config.tls_acceptor()?;
        let mapper = config.mqtt.mapper()?;

        let backend = barnabas_kafka::connect(&kafka)
            .map_err(|e| Failure::Config(format!("kafka.properties: {e}")))?;
        let readiness = Readiness::new();
        let mut tasks = JoinSet::new();

        let shutdown = CancellationToken::new();
        let registry = MetricsRegistry::new();
        let gateway_metrics = GatewayMetrics::new(&registry);
        // One principal model for every front end.
        let auth = std::sync::Arc::new(config.authenticator()?);
        let throttle = std::sync::Arc::new(barnabas_core::auth::FailureThrottle::default());
        let http_state = barnabas_http::AppState::new(
            backend.clone(),
            readiness.clone(),
            crate::VERSION,
            http_settings(&config, http_addr),
            registry.clone(),
            gateway_metrics.clone(),
            shutdown.clone(),
        )
        .with_auth(auth.clone(), throttle.clone());
        let header_read_timeout = Duration::from_millis(config.http.header_read_timeout_ms.max(1));
        let max_connections = config.limits.max_connections;
        if let (Some(listener), Some(tls)) = (https_listener, tls.clone()) {
            let router = barnabas_http::router(http_state.clone());
            let token = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = barnabas_http::serve_tls(
                    listener,
                    router,
                    tls,
                    header_read_timeout,
                    max_connections,
                    token,
                )
                .await
                {
                    tracing::error!(error = %e, "HTTPS listener failed");
                }
            });
        }
        if let Some(tls) = tls.clone() {
            tasks.spawn(reload_tls_on_sighup(tls, shutdown.clone()));
        }
        if let Some(listener) = http_listener {
            let router = barnabas_http::router(http_state.clone());
            let token = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = barnabas_http::serve(
                    listener,
                    router,
                    header_read_timeout,
                    max_connections,
                    token,
                )
                .await
                {
                    tracing::error!(error = %e, "HTTP listener failed");
                }
            });
        }

        if mqtt_listener.is_some()
            || mqtt_ws_listener.is_some()
            || mqtts_listener.is_some()
            || wss_listener.is_some()
        {
            let live = std::sync::Arc::new(barnabas_mqtt::Sessions::default());
            let retained = std::sync::Arc::new(barnabas_mqtt::retained::RetainedStore::new(
                config.limits.max_retained_bytes,
            ));
            let stored = std::sync::Arc::new(barnabas_mqtt::store::SessionStore::default());
            // Sessions and retained messages live in compacted topics every replica follows.
            let state = barnabas_mqtt::state::MqttState::follow(
                &backend,
                live.clone(),
                stored.clone(),
                retained.clone(),
                shutdown.clone(),
            );
            let ctx = std::sync::Arc::new(barnabas_mqtt::MqttContext {
                backend_publisher: backend.publisher.clone(),
                mapper,
                settings: barnabas_mqtt::MqttSettings {
                    max_message_bytes: config.limits.max_message_bytes,
                    connect_timeout: Duration::from_secs(5),
                    receive_window: 1024,
                    max_connections: config.limits.max_connections,
                    publish_rate: config.limits.publish_rate,
                    max_subscriptions: config.limits.max_subscriptions,
                    kafka_metadata: config.mqtt.kafka_metadata,
                    server_keep_alive: std::num::NonZeroU16::new(
                        config.mqtt.server_keep_alive_secs,
                    ),
                    max_sessions: config.limits.max_sessions,
                    max_consumers_per_connection: config.limits.max_consumers_per_connection,
                    ws_allowed_origins: config.mqtt.ws_allowed_origins.clone(),
                },
                metrics: barnabas_mqtt::MqttMetrics::new(&registry),
                gateway_metrics: gateway_metrics.clone(),
                sessions: live,
                consumers: backend.consumers.clone(),
                admin: backend.admin.clone(),
                catalog: barnabas_core::TopicCatalog::spawn(
                    backend.admin.clone(),
                    Duration::from_millis(config.mqtt.topic_refresh_ms.max(100)),
                ),
                retained,
                stored,
                state,
                auth: auth.clone(),
                throttle: throttle.clone(),
                tls: tls.clone(),
            });
            for (listener, transport) in [
                (mqtt_listener, barnabas_mqtt::Transport::Tcp),
                (mqtt_ws_listener, barnabas_mqtt::Transport::WebSocket),
                (mqtts_listener, barnabas_mqtt::Transport::Tls),
                (wss_listener, barnabas_mqtt::Transport::SecureWebSocket),
            ] {
                if let Some(listener) = listener {
                    tasks.spawn(barnabas_mqtt::serve(
                        listener,
                        transport,
                        ctx.clone(),
                        shutdown.clone(),
                    ));
                }
            }
        }

        if amqp_listener.is_some() || amqps_listener.is_some() {
            let ctx = std::sync::Arc::new(barnabas_amqp::AmqpContext {
                publisher: backend.publisher.clone(),
                consumers: backend.consumers.clone(),
                admin: backend.admin.clone(),
                auto_create_topics: config.kafka.auto_create_topics,
                settings: barnabas_amqp::AmqpSettings {
                    max_message_bytes: config.limits.max_message_bytes,
                    max_frame_size: 65_536,
                    channel_max: 255,
                    idle_timeout_ms: 60_000,
                    open_timeout: Duration::from_secs(5),
                    max_connections: config.limits.max_connections,
                    publish_rate: config.limits.publish_rate,
                    max_consumers_per_connection: config.limits.max_consumers_per_connection,
                },
                metrics: barnabas_amqp::AmqpMetrics::new(&registry),
                gateway_metrics: gateway_metrics.clone(),
                auth: auth.clone(),
                throttle: throttle.clone(),
                tls: tls.clone(),
            });
            if let Some(listener) = amqp_listener {
                tasks.spawn(barnabas_amqp::serve(
                    listener,
                    ctx.clone(),
                    shutdown.clone(),
                ));
            }
            if let Some(listener) = amqps_listener {
                tasks.spawn(barnabas_amqp::serve_tls(listener, ctx, shutdown.clone()));
            }
        }

        if !config.sources.sse.is_empty() {
            let ctx = barnabas_sse::SourceContext {
                publisher: backend.publisher.clone(),
                consumers: backend.consumers.clone(),
                admin: backend.admin.clone(),
                metrics: barnabas_sse::SourceMetrics::new(&registry),
            };
            for source in &config.sources.sse {
                let spec = barnabas_sse::SourceSpec {
                    url: source.url.clone(),
                    topic: source.topic.clone(),
                    key: barnabas_sse::KeyRule::parse(&source.key).map_err(|e| {
                        Failure::Config(format!("sources.sse key '{}': {e}", source.key))
                    })?,
                    idle_timeout: Duration::from_millis(source.idle_timeout_ms),
                };
                tasks.spawn(barnabas_sse::run(spec, ctx.clone(), shutdown.clone()));
            }
        }

        tasks.spawn(watch_kafka(
            backend.clone(),
            readiness.clone(),
            shutdown.clone(),
            http_addr,
            kafka.bootstrap_servers.clone(),
        ));

        Ok(Self {
            shutdown,
            tasks,
            backend,
            http: http_state,
            readiness,
            http_addr,
            mqtt_addr,
            mqtt_ws_addr,
            amqp_addr,
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
        self.http.consumers.close_all().await;
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
        consumer_idle_timeout: Duration::from_millis(config.http.consumer_idle_timeout_ms),
        max_body_bytes: config.limits.max_message_bytes,
        cors_origins: config.http.cors_origins.clone(),
        driver_limits: DriverLimits {
            max_records: records,
            max_bytes: DriverLimits::default()
                .max_bytes
                .max(config.limits.max_message_bytes * 2),
            poll_batch: records.clamp(1, 500),
        },
        sse_keep_alive: Duration::from_millis(config.http.sse_keep_alive_ms),
        advertised_url: format!("http://{advertised}"),
        publish_rate: config.limits.publish_rate,
        max_consumers_per_principal: config.limits.max_consumers_per_principal,
        max_topic_partitions: config.limits.max_topic_partitions,
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

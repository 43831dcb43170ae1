//! The gateway's configuration: one struct per TOML section, each documenting its keys.
//!
//! Layers, lowest to highest precedence: built-in defaults, the TOML file (`--config`),
//! `BARNABAS_<SECTION>__<KEY>` environment variables, command-line flags. Every struct denies
//! unknown keys, so a typo is an error naming the key rather than a silently ignored setting.

use std::{net::SocketAddr, path::Path, time::Duration};

use barnabas_kafka::KafkaConfig;
use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

/// The word that switches a listener off.
pub const OFF: &str = "off";

/// A duration the config writes as whole milliseconds (the `*_ms` keys the interface
/// contract names): typed, so that code reads it as a [`Duration`] and never as a
/// bare count of something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// The duration.
    pub const fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[kafka]`: how to reach Kafka.
    pub kafka: KafkaConfig,
    /// `[http]`: the REST/SSE front end.
    pub http: HttpConfig,
    /// `[mqtt]`: the MQTT front end.
    pub mqtt: MqttConfig,
    /// `[amqp]`: the AMQP 1.0 front end.
    pub amqp: AmqpConfig,
    /// `[limits]`: bounds applied to every protocol.
    pub limits: LimitsConfig,
    /// `[[sources.sse]]`: remote streams pulled into Kafka.
    pub sources: SourcesConfig,
    /// `[tls]`: the certificate of every TLS listener.
    pub tls: TlsConfig,
    /// `[auth]`: who clients are.
    pub auth: AuthConfig,
    /// `[[acl]]`: what each principal may do; none at all = everything allowed.
    pub acl: Vec<AclConfig>,
}

/// `[tls]`: one server certificate for every TLS listener; SIGHUP reloads the files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificates of client certificates (mutual TLS; the principal is the subject
    /// CN); `""` = client certificates are not requested.
    pub client_ca_file: String,
    /// How long a TLS handshake may take on every TLS listener (HTTPS, MQTT/TLS, MQTT over
    /// secure WebSocket, AMQPS) before the connection is closed, so that a client that never
    /// finishes cannot hold a connection slot.
    pub handshake_timeout_ms: Millis,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            handshake_timeout_ms: Millis(5_000),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (everyone is the principal `anonymous`) or `users` (clients authenticate
    /// against `users_file`).
    pub mode: String,
    /// TOML users file (`[[user]] name, password_hash, tokens_sha256`), for `mode = "users"`.
    pub users_file: String,
    /// With `mode = "users"`: may clients without credentials connect (as `anonymous`)?
    pub allow_anonymous: bool,
    /// Password checks (argon2, tens of ms of CPU and 19 MiB each) running at once; a login
    /// beyond it is refused as "server busy" (HTTP 503, MQTT 0x89 / 3, AMQP SASL temporary
    /// failure) instead of queued on a blocking thread. 0 = two per core.
    pub max_password_checks: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: "none".into(),
            users_file: String::new(),
            allow_anonymous: false,
            max_password_checks: 0,
        }
    }
}

/// One `[[acl]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// A user name, a client-certificate CN, or `*` (every principal).
    pub principal: String,
    /// Grants on Kafka names after mapping: `write:TOPIC`, `read:TOPIC`, `group:GROUP`, with
    /// `*` wildcards and `{principal}` for the principal's own name.
    pub allow: Vec<String>,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP listener binds, or `off`.
    pub listen: String,
    /// Address of the HTTPS listener (the `[tls]` certificate), or `off`.
    pub tls_listen: String,
    /// Consumer instances idle this long (ms) are deleted and their Kafka consumer closed.
    pub consumer_idle_timeout_ms: Millis,
    /// Origins allowed to call the API from a browser (CORS); `[]` = no CORS headers,
    /// `["*"]` = any origin.
    pub cors_origins: Vec<String>,
    /// Records each consumer instance reads ahead at most before pausing its partitions.
    pub consumer_buffer_records: usize,
    /// Interval of keep-alive comments on idle SSE streams (ms).
    pub sse_keep_alive_ms: Millis,
    /// `host:port` at which other replicas reach this one's HTTP listener, to forward
    /// requests for the consumer instances it serves; `""` = the listen address (with
    /// `127.0.0.1` for an unspecified host, which only suits replicas on one machine: set it
    /// to the pod or host address, e.g. from `POD_IP`, when replicas run on several).
    pub advertised_address: String,
    /// A request's headers must arrive within this (ms) of the connection opening or of the
    /// previous answer, or the connection is closed: clients that connect and send nothing
    /// (or a few header bytes at a time) hold no connection longer. Idle kept-alive
    /// connections are closed after it too.
    pub header_read_timeout_ms: Millis,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            tls_listen: OFF.into(),
            consumer_idle_timeout_ms: Millis(300_000),
            cors_origins: Vec::new(),
            consumer_buffer_records: 1_000,
            sse_keep_alive_ms: Millis(15_000),
            advertised_address: String::new(),
            header_read_timeout_ms: Millis(30_000),
        }
    }
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Address the MQTT listener binds, or `off`.
    pub listen: String,
    /// Address of the MQTT-over-WebSocket listener (path `/mqtt`), or `off`.
    pub ws_listen: String,
    /// Address of the MQTT-over-TLS listener (the `[tls]` certificate), or `off`.
    pub tls_listen: String,
    /// Address of the MQTT-over-secure-WebSocket listener (path `/mqtt`), or `off`.
    pub wss_listen: String,
    /// Kafka topic for publishes no mapping rule matches; `""` rejects them.
    pub default_topic: String,
    /// Mapping rules from MQTT topics to Kafka topics and keys; the first match wins.
    pub mapping: Vec<MqttMapping>,
    /// How often (ms) the cluster's topic list is re-read, so that subscriptions pick up
    /// topics and partitions that appear after they were made.
    pub topic_refresh_ms: Millis,
    /// v5 deliveries also carry the record's Kafka topic, partition, offset, timestamp and
    /// key as `barnabas.kafka.*` user properties. Off: a subscriber gets a publish's user
    /// properties exactly as published and nothing more (MQTT 5.0, 3.3.2.3.7).
    pub kafka_metadata: bool,
    /// Server Keep Alive (seconds) the CONNACK tells MQTT 5 clients to use instead of the
    /// keep-alive they asked for (MQTT 5.0, 3.2.2.3.14); the gateway closes a v5 client
    /// silent for 1.5 times it. `0` (default) = off: every client keeps its own. MQTT 3.1.1
    /// clients always keep their own (their CONNACK cannot carry it).
    pub server_keep_alive_secs: u16,
    /// Browser origins (`https://app.example.com`) allowed to open MQTT over WebSocket;
    /// `[]` (default) = any. A handshake with another `Origin` header gets 403; clients that
    /// send none (not browsers) are unaffected.
    pub ws_allowed_origins: Vec<String>,
}

impl MqttConfig {
    /// Compiles the mapping rules and default topic (see [`barnabas_core::TopicMapper`]).
    pub fn mapper(&self) -> Result<barnabas_core::TopicMapper, ConfigError> {
        let rules: Vec<barnabas_core::MappingRule> = self
            .mapping
            .iter()
            .map(|m| barnabas_core::MappingRule {
                pattern: m.pattern.clone(),
                kafka_topic: m.kafka_topic.clone(),
                key: m.key.clone(),
            })
            .collect();
        barnabas_core::TopicMapper::new(&rules, &self.default_topic).map_err(|e| match e {
            barnabas_core::Error::Invalid(msg) => ConfigError(format!("mqtt.{msg}")),
            other => ConfigError(format!("mqtt.default_topic: {other}")),
        })
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:1883".into(),
            ws_listen: OFF.into(),
            tls_listen: OFF.into(),
            wss_listen: OFF.into(),
            default_topic: "mqtt".into(),
            mapping: Vec::new(),
            topic_refresh_ms: Millis(2_000),
            kafka_metadata: false,
            server_keep_alive_secs: 0,
            ws_allowed_origins: Vec::new(),
        }
    }
}

/// One `[[mqtt.mapping]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttMapping {
    /// MQTT topic pattern; `{name}` binds one level, `{name*}` the rest.
    pub pattern: String,
    /// Kafka topic, may use the pattern's `{name}`s.
    pub kafka_topic: String,
    /// Record key template; default: the MQTT topic name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `[amqp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Address the AMQP listener binds, or `off`.
    pub listen: String,
    /// Address of the AMQPS listener (the `[tls]` certificate), or `off`.
    pub tls_listen: String,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:5672".into(),
            tls_listen: OFF.into(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest record payload accepted from any protocol; above it the client gets that
    /// protocol's "too large" error, not a dropped socket.
    pub max_message_bytes: usize,
    /// Connections accepted at once across all listeners.
    pub max_connections: usize,
    /// Publishes per second per MQTT connection and records per second per HTTP principal;
    /// 0 = no limit. Over it, MQTT publishes are read more slowly (nothing is dropped) and
    /// HTTP produce requests get 429 with `Retry-After`.
    pub publish_rate: u32,
    /// Subscriptions (filters) one MQTT client may hold; more get SUBACK 0x97 (v5) / 0x80.
    pub max_subscriptions: usize,
    /// Kafka consumers one principal may have on a replica: HTTP consumer instances and SSE
    /// streams together (with `auth.mode = "none"` every client is `anonymous`); more get 429.
    pub max_consumers_per_principal: usize,
    // --- per-client state and consumers (issue 20); keep these together. ---
    /// Persistent MQTT sessions the gateway keeps (connected or not); a CONNECT that would
    /// start one more gets CONNACK 0x97 (v5) / 3 "server unavailable" (3.1.1).
    pub max_sessions: usize,
    /// Total payload bytes of MQTT retained messages; a retained publish over it gets PUBACK
    /// 0x97 (v5) / a closed connection (3.1.1), and nothing is written.
    pub max_retained_bytes: usize,
    /// Kafka consumers one connection may hold at once. MQTT: its plain subscriptions share
    /// one, each `$share` group is one; a filter needing another gets SUBACK 0x97 (v5) / 0x80.
    /// AMQP: each receiver link is one; one more is refused with
    /// `amqp:resource-limit-exceeded`.
    pub max_consumers_per_connection: usize,
    /// Most partitions `POST /admin/topics` creates a topic with; more get 422.
    pub max_topic_partitions: i32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 1_048_576,
            max_connections: 100_000,
            publish_rate: 0,
            max_subscriptions: 1_000,
            max_consumers_per_principal: 1_000,
            max_sessions: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
            max_consumers_per_connection: 8,
            max_topic_partitions: 1_000,
        }
    }
}

/// `[sources]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// `[[sources.sse]]` entries.
    pub sse: Vec<SseSource>,
}

/// One `[[sources.sse]]`: a Server-Sent Events stream written into a Kafka topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseSource {
    /// URL of the stream.
    pub url: String,
    /// Kafka topic its events go to.
    pub topic: String,
    /// `event_type` (the event's single top-level JSON key) or a JSON pointer.
    #[serde(default = "default_sse_key")]
    pub key: String,
    /// A stream silent this long (ms; not even a keep-alive comment) is reconnected.
    #[serde(default = "default_sse_idle_timeout_ms")]
    pub idle_timeout_ms: Millis,
}

fn default_sse_key() -> String {
    "event_type".into()
}

/// [`SseSource::idle_timeout_ms`]'s default: 120 s.
pub const DEFAULT_SSE_IDLE_TIMEOUT_MS: Millis = Millis(120_000);

fn default_sse_idle_timeout_ms() -> Millis {
    DEFAULT_SSE_IDLE_TIMEOUT_MS
}

/// A configuration problem, reported as one line and exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<barnabas_kafka::KafkaConfigError> for ConfigError {
    fn from(e: barnabas_kafka::KafkaConfigError) -> Self {
        Self(e.to_string())
    }
}

impl Config {
    /// Loads the layers. `overrides` are the command-line flags, already in config shape.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", path.display()))
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        figment = figment.merge(env_provider());
        figment = figment.merge(Serialized::defaults(overrides));
        let config: Config = figment.extract().map_err(|e| describe(e, file))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: addresses and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("http.listen", &self.http.listen),
            ("mqtt.listen", &self.mqtt.listen),
            ("mqtt.ws_listen", &self.mqtt.ws_listen),
            ("mqtt.tls_listen", &self.mqtt.tls_listen),
            ("mqtt.wss_listen", &self.mqtt.wss_listen),
            ("http.tls_listen", &self.http.tls_listen),
            ("amqp.tls_listen", &self.amqp.tls_listen),
            ("amqp.listen", &self.amqp.listen),
        ] {
            parse_listen(key, value)?;
        }
        self.validate_kafka()?;
        // Counts and timeouts where 0 would mean "nothing ever" (no message fits, every
        // handshake or consumer times out at once, an SSE stream of keep-alives only).
        for (key, value) in [
            (
                "limits.max_message_bytes",
                self.limits.max_message_bytes as u64,
            ),
            ("tls.handshake_timeout_ms", self.tls.handshake_timeout_ms.0),
            (
                "http.consumer_idle_timeout_ms",
                self.http.consumer_idle_timeout_ms.0,
            ),
            ("http.sse_keep_alive_ms", self.http.sse_keep_alive_ms.0),
            (
                "http.consumer_buffer_records",
                self.http.consumer_buffer_records as u64,
            ),
            ("limits.max_connections", self.limits.max_connections as u64),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{key}: must be above 0")));
            }
        }
        self.mqtt.mapper()?;
        self.authenticator()?;
        self.tls_acceptor()?;
        self.kafka.clone().resolve_secret_files()?;
        self.validate_sources()
    }

    /// `[kafka]`: somewhere to connect, one identity, partition and replica counts Kafka takes.
    fn validate_kafka(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError(
                "kafka.bootstrap_servers: must name at least one host:port".into(),
            ));
        }
        self.kafka.validate_identity()?;
        if self.kafka.default_partitions < 1 {
            return Err(ConfigError(format!(
                "kafka.default_partitions: must be at least 1, not {}",
                self.kafka.default_partitions
            )));
        }
        if self.kafka.default_replication_factor == 0 || self.kafka.default_replication_factor < -1
        {
            return Err(ConfigError(format!(
                "kafka.default_replication_factor: must be -1 (broker default) or at least 1, not {}",
                self.kafka.default_replication_factor
            )));
        }
        Ok(())
    }

    /// `[[sources.sse]]`: an http:// URL, a valid topic name and key rule, a positive idle
    /// timeout.
    fn validate_sources(&self) -> Result<(), ConfigError> {
        for (i, source) in self.sources.sse.iter().enumerate() {
            if !source.url.starts_with("http://") {
                return Err(ConfigError(format!(
                    "sources.sse[{i}].url: '{}' is not an http:// URL (https sources are not supported yet)",
                    source.url
                )));
            }
            barnabas_core::validate_topic_name(&source.topic)
                .map_err(|e| ConfigError(format!("sources.sse[{i}].topic: {e}")))?;
            barnabas_sse::KeyRule::parse(&source.key)
                .map_err(|e| ConfigError(format!("sources.sse[{i}].key: {e}")))?;
            if source.idle_timeout_ms.0 == 0 {
                return Err(ConfigError(format!(
                    "sources.sse[{i}].idle_timeout_ms: must be above 0"
                )));
            }
        }
        Ok(())
    }

    /// Whether any TLS listener is configured.
    pub fn wants_tls(&self) -> bool {
        [
            &self.http.tls_listen,
            &self.mqtt.tls_listen,
            &self.mqtt.wss_listen,
            &self.amqp.tls_listen,
        ]
        .iter()
        .any(|l| l.as_str() != OFF)
    }

    /// The TLS server side of `[tls]` (reads the files), if a TLS listener is configured.
    pub fn tls_acceptor(
        &self,
    ) -> Result<Option<std::sync::Arc<barnabas_core::tls::TlsAcceptor>>, ConfigError> {
        if !self.wants_tls() {
            return Ok(None);
        }
        for (key, value) in [
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            if value.is_empty() {
                return Err(ConfigError(format!(
                    "{key}: required when a TLS listener is configured"
                )));
            }
        }
        let files = barnabas_core::tls::TlsFiles {
            cert: self.tls.cert_file.clone().into(),
            key: self.tls.key_file.clone().into(),
            client_ca: (!self.tls.client_ca_file.is_empty())
                .then(|| self.tls.client_ca_file.clone().into()),
        };
        let deadline = self.tls.handshake_timeout_ms.duration();
        barnabas_core::tls::TlsAcceptor::load(files, deadline)
            .map(Some)
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// The authenticator `[auth]` and `[[acl]]` describe (reads the users file).
    pub fn authenticator(&self) -> Result<barnabas_core::Authenticator, ConfigError> {
        use barnabas_core::auth::{Acl, AclRule, AuthMode, Users};
        let acl = Acl::new(
            self.acl
                .iter()
                .map(|a| AclRule {
                    principal: a.principal.clone(),
                    allow: a.allow.clone(),
                })
                .collect(),
        )
        .map_err(|e| ConfigError(format!("acl: {e}")))?;
        let mode = match self.auth.mode.as_str() {
            "none" => AuthMode::None,
            "users" => AuthMode::Users,
            other => {
                return Err(ConfigError(format!(
                    "auth.mode: '{other}' is not \"none\" or \"users\""
                )))
            }
        };
        let users = if mode == AuthMode::Users {
            if self.auth.users_file.is_empty() {
                return Err(ConfigError(
                    "auth.users_file: required with auth.mode = \"users\"".into(),
                ));
            }
            let text = std::fs::read_to_string(&self.auth.users_file).map_err(|e| {
                ConfigError(format!(
                    "auth.users_file: cannot read {}: {e}",
                    self.auth.users_file
                ))
            })?;
            Users::from_toml(&text).map_err(|e| {
                ConfigError(format!("auth.users_file {}: {e}", self.auth.users_file))
            })?
        } else {
            Users::default()
        };
        let auth = barnabas_core::Authenticator::new(mode, users, self.auth.allow_anonymous, acl)
            .with_internal_topics(barnabas_core::InternalTopics::new(
                &self.kafka.internal_prefix,
            ))
            .with_max_password_checks(self.auth.max_password_checks);
        // Identity passthrough logs each client in to Kafka with its own password.
        Ok(if self.kafka.passthrough() {
            auth.keeping_passwords()
        } else {
            auth
        })
    }

    /// Settings that are valid but probably not what the operator meant (logged at start,
    /// printed by `check-config`).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.auth.mode == "none" && !self.acl.is_empty() {
            out.push(
                "[[acl]] rules with auth.mode = \"none\": nothing is verified, so any client can \
                 claim any principal (an MQTT or Basic user name, a certificate CN is taken \
                 unchecked); the ACLs are no protection until auth.mode = \"users\""
                    .to_owned(),
            );
        }
        out
    }

    /// The effective configuration as TOML, for `check-config`.
    /// Secrets among `kafka.properties` (passwords, keys, JAAS configs) are printed as `***`.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        for (key, value) in shown.kafka.properties.iter_mut() {
            if is_secret(key) {
                *value = "***".into();
            }
        }
        toml::to_string_pretty(&shown).map_err(|e| ConfigError(format!("cannot print config: {e}")))
    }
}

/// Whether a librdkafka property holds a secret (never printed).
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "key.pem", "token"]
        .iter()
        .any(|s| key.contains(s))
}

/// Parses a listener address: `None` for `off`, else `host:port`.
pub fn parse_listen(key: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value == OFF {
        return Ok(None);
    }
    let value = value.replacen("localhost:", "127.0.0.1:", 1);
    value.parse::<SocketAddr>().map(Some).map_err(|_| {
        ConfigError(format!(
            "{key}: '{value}' is not an address (expected IP:PORT, e.g. 0.0.0.0:8080, or \"off\")"
        ))
    })
}

/// `BARNABAS_<SECTION>__<KEY>`: only variables with a section separator take part, so
/// unrelated `BARNABAS_*` variables in the environment are not mistaken for config keys.
fn env_provider() -> Env {
    Env::prefixed("BARNABAS_")
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

/// One line for a figment error: what, which key, from where.
fn describe(err: figment::Error, file: Option<&Path>) -> ConfigError {
    let first = err.into_iter().next();
    let Some(e) = first else {
        return ConfigError("invalid configuration".into());
    };
    let key = e.path.join(".");
    let source = match e.metadata.as_ref().map(|m| m.name.as_ref()) {
        Some(name) if name.contains("TOML") => file
            .map(|f| format!("config file {}", f.display()))
            .unwrap_or_else(|| "config file".into()),
        Some(name) if name.contains("environment") => format!(
            "environment variable BARNABAS_{}",
            e.path
                .iter()
                .map(|p| p.to_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        ),
        Some(name) if name.contains("Serialized") => "command line".into(),
        Some(name) => name.to_owned(),
        None => "configuration".into(),
    };
    let kind = e
        .kind
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if key.is_empty() {
        ConfigError(format!("{source}: {kind}"))
    } else {
        ConfigError(format!("{source}: key `{key}`: {kind}"))
    }
}

/// Command-line flags that override config keys; `None` = not given.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// Overrides of `[kafka]`.
    #[serde(skip_serializing_if = "KafkaOverrides::is_empty")]
    pub kafka: KafkaOverrides,
    /// Overrides of `[http]`.
    #[serde(skip_serializing_if = "ListenOverride::is_empty")]
    pub http: ListenOverride,
    /// Overrides of `[mqtt]`.
    #[serde(skip_serializing_if = "ListenOverride::is_empty")]
    pub mqtt: ListenOverride,
    /// Overrides of `[amqp]`.
    #[serde(skip_serializing_if = "ListenOverride::is_empty")]
    pub amqp: ListenOverride,
}

/// `--kafka-bootstrap`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KafkaOverrides {
    /// `kafka.bootstrap_servers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
}

impl KafkaOverrides {
    fn is_empty(&self) -> bool {
        self.bootstrap_servers.is_none()
    }
}

/// `--<proto>-listen`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListenOverride {
    /// `<section>.listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl ListenOverride {
    fn is_empty(&self) -> bool {
        self.listen.is_none()
    }
}

/// Whether any layer (file, environment, flag) names a Kafka cluster; if none does, the
/// gateway starts its embedded broker.
pub fn names_kafka_cluster(file: Option<&Path>, overrides: &Overrides) -> bool {
    if overrides.kafka.bootstrap_servers.is_some() {
        return true;
    }
    if std::env::var_os("BARNABAS_KAFKA__BOOTSTRAP_SERVERS").is_some() {
        return true;
    }
    file.and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("kafka")
                .and_then(|k| k.get("bootstrap_servers"))
                .cloned()
        })
        .is_some()
}

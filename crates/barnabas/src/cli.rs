//! Command-line interface. Flags of `run` also work without the word `run`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{KafkaOverrides, ListenOverride, Overrides};

/// barnabas: MQTT, AMQP 1.0 and HTTP/SSE in front of Apache Kafka, in one process.
#[derive(Debug, Parser)]
#[command(name = "barnabas", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without one, `run`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, accepted before any subcommand too.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run(RunArgs),
    /// Validate the configuration, print the effective config, exit 0 (valid) or 2 (invalid).
    CheckConfig(RunArgs),
    /// Read a password on stdin and print its argon2id hash (for the users file) as the last
    /// line on stdout.
    HashPassword,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Storage engine of the embedded broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum EmbeddedStorage {
    /// tansu's SQLite engine: a temporary file, or `--data-dir`.
    #[default]
    Sqlite,
    /// Acknowledge and discard every write (benchmarks of the gateway's own cost).
    Null,
}

/// Flags of `run` (and `check-config`).
#[derive(Debug, Clone, Args, Default)]
pub struct RunArgs {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start an in-process Kafka broker on ADDR (default 127.0.0.1:9092) and use it. This is
    /// the default when no Kafka cluster is configured.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true,
          default_missing_value = "127.0.0.1:9092")]
    pub embedded_kafka: Option<String>,
    /// Address the embedded broker tells clients to connect to (default: its listen address,
    /// 127.0.0.1 when it listens on 0.0.0.0). Set it to the host name clients use.
    #[arg(long, value_name = "HOST:PORT")]
    pub embedded_advertised: Option<String>,
    /// Keep the embedded broker's data in DIR across restarts (default: nothing is kept).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Storage engine of the embedded broker: `sqlite` (default) stores every record; `null`
    /// acknowledges and discards them, so benchmarks can see the gateway's own cost without
    /// the broker's storage (nothing can be read back; never for real use).
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub embedded_storage: Option<EmbeddedStorage>,
    /// External Kafka cluster (sets kafka.bootstrap_servers).
    #[arg(long, value_name = "HOST:PORT[,…]")]
    pub kafka_bootstrap: Option<String>,
    /// HTTP listener address, or `off` (sets http.listen).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// MQTT listener address, or `off` (sets mqtt.listen).
    #[arg(long, value_name = "ADDR")]
    pub mqtt_listen: Option<String>,
    /// AMQP listener address, or `off` (sets amqp.listen).
    #[arg(long, value_name = "ADDR")]
    pub amqp_listen: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl RunArgs {
    /// Flags given after `run` win over the same flags given before it.
    pub fn merged_over(self, outer: RunArgs) -> RunArgs {
        RunArgs {
            config: self.config.or(outer.config),
            embedded_kafka: self.embedded_kafka.or(outer.embedded_kafka),
            embedded_advertised: self.embedded_advertised.or(outer.embedded_advertised),
            data_dir: self.data_dir.or(outer.data_dir),
            embedded_storage: self.embedded_storage.or(outer.embedded_storage),
            kafka_bootstrap: self.kafka_bootstrap.or(outer.kafka_bootstrap),
            http_listen: self.http_listen.or(outer.http_listen),
            mqtt_listen: self.mqtt_listen.or(outer.mqtt_listen),
            amqp_listen: self.amqp_listen.or(outer.amqp_listen),
            log_format: self.log_format.or(outer.log_format),
        }
    }

    /// The flags that override config keys.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            kafka: KafkaOverrides {
                bootstrap_servers: self.kafka_bootstrap.clone(),
            },
            http: ListenOverride {
                listen: self.http_listen.clone(),
            },
            mqtt: ListenOverride {
                listen: self.mqtt_listen.clone(),
            },
            amqp: ListenOverride {
                listen: self.amqp_listen.clone(),
            },
        }
    }
}

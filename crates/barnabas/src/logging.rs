//! `tracing` to stderr, as text or JSON lines; `RUST_LOG` overrides the default filter.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::cli::LogFormat;

/// Default filter: the gateway at info, the embedded broker and librdkafka only when they
/// have something to warn about.
const DEFAULT_FILTER: &str = "info,tansu_broker=warn,tansu_storage=warn,tansu_sans_io=warn,libsql=warn,rdkafka=warn,librdkafka=warn";

/// Installs the global subscriber (once; later calls are no-ops).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

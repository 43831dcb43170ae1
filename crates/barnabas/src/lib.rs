//! The barnabas binary's library half: configuration, the embedded broker and the process
//! lifecycle, kept in a library so integration tests can drive the same code the binary runs.

pub mod cli;
pub mod config;
#[cfg(feature = "embedded-kafka")]
pub mod embedded;
pub mod logging;
pub mod run;

/// The version reported by `--version` and `GET /`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

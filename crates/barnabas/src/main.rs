//! `barnabas`: parse the command line, run, map the outcome to an exit code
//! (0 clean stop, 1 runtime failure, 2 bad configuration or busy address).

use std::process::ExitCode;

use barnabas::{
    cli::{Cli, Command},
    run::{self, Failure},
};
use clap::Parser;

/// jemalloc instead of glibc's malloc: the gateway allocates and frees small buffers per
/// message on every runtime thread, and glibc's arenas serialised those on their locks — a
/// third of the process's CPU under MQTT QoS 1 load went to malloc, free and the futex waits
/// behind them (docs/benchmarks.md, issue 26). mimalloc was as fast for MQTT but held up to
/// three times the RSS and slowed the embedded broker.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run::run(cli.run),
        Some(Command::Run(args)) => run::run(args.merged_over(cli.run)),
        Some(Command::CheckConfig(args)) => run::check_config(args.merged_over(cli.run)),
        Some(Command::HashPassword) => run::hash_password(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(msg)) => {
            eprintln!("barnabas: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Fatal(err)) => {
            eprintln!("barnabas: {err:#}");
            ExitCode::from(1)
        }
    }
}

//! `barnabas`: parse the command line, run, map the outcome to an exit code
//! (0 clean stop, 1 runtime failure, 2 bad configuration or busy address).

use std::process::ExitCode;

use barnabas::{
    cli::{Cli, Command},
    run::{self, Failure},
};
use clap::Parser;

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

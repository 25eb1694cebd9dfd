//! The `plangate` command: reads the command line and runs it. Everything else is in `cli` (one
//! file per command) and in the `plangate` library (the service).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli.init_logging();
    cli.run()
}

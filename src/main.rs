//! The `plangate` command: reads the command line and runs it. Everything else is in `cli` (one
//! file per command) and in the `plangate` library (the service).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: an answer allocates a few dozen small strings
/// (prost messages own their `String`s), and malloc/free were ~10% of the server's CPU per call;
/// mimalloc measured 12.1–12.5 µs CPU per Check against glibc's 14.5–15.2 µs (jemalloc:
/// 12.4–13.4 µs, and a longer build). docs/benchmarks.md has the runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli.init_logging();
    cli.run()
}

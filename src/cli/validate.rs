//! `plangate validate FILE`: exit 0 with a summary, or print every error and exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use plangate::config;

use super::error::CliError;
use super::out::Out;

/// Arguments of `plangate validate`.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration file.
    file: PathBuf,
}

/// Runs `plangate validate`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let mut out = Out::stdout();
    match config::load_file(&a.file) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            let s = &c.snapshot;
            out.line(format_args!(
                "{}: OK ({} APIs, {} stages, {} usage plans, {} API keys)",
                a.file.display(),
                s.apis.len(),
                s.stage_names.len(),
                s.plans.len(),
                s.keys.len()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                out.line(e);
            }
            out.line(format_args!(
                "{}: {} error(s)",
                a.file.display(),
                errors.0.len()
            ));
            Ok(ExitCode::FAILURE)
        }
    }
}

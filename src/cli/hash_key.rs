//! `plangate hash-key VALUE`: the SHA-256 to write as `value_sha256`.

use std::process::ExitCode;

use super::error::CliError;
use super::out::Out;

/// Arguments of `plangate hash-key`.
#[derive(clap::Args)]
pub struct Args {
    /// The key value; `-` reads it from stdin (so that it stays out of the shell history).
    value: String,
}

/// Runs `plangate hash-key`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let value = if a.value == "-" {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        a.value
    };
    Out::stdout().line(hex::encode(plangate::snapshot::hash_key(&value)));
    Ok(ExitCode::SUCCESS)
}

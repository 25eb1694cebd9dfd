//! `plangate health`: asks a running plangate's admin address whether it is alive (`/healthz`)
//! or ready (`/readyz`), for container HEALTHCHECKs and exec probes where no HTTP client is at
//! hand — through the same admin client as every other command (`--admin http://…` or
//! `https://…`, `--admin-ca`, `--admin-cert/--admin-key` for mTLS). Exit 0 when it answers
//! 200, 1 otherwise.

use std::process::ExitCode;

use super::admin::AdminArgs;
use super::error::CliError;
use super::out::Out;

/// Arguments of `plangate health`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    admin: AdminArgs,
    /// Ask whether it is ready (configuration loaded, counter store reachable), not only alive.
    #[arg(long)]
    ready: bool,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
}

/// Runs `plangate health`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let timeout = super::runtime::seconds("--timeout", a.timeout)?;
    let path = if a.ready { "/readyz" } else { "/healthz" };
    let rt = super::runtime::current_thread()?;
    let answer = rt.block_on(async {
        tokio::time::timeout(timeout, async { a.admin.connect().await?.get(path).await })
            .await
            .unwrap_or_else(|_| Err(CliError::Admin(format!("no answer within {timeout:?}"))))
    });
    match answer {
        Ok((200, body)) => {
            Out::stdout().text(body);
            Ok(ExitCode::SUCCESS)
        }
        Ok((status, body)) => {
            eprintln!("{path}: {status} {}", body.trim_end());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{}{path}: {e}", a.admin.url());
            Ok(ExitCode::FAILURE)
        }
    }
}

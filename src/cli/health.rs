//! `plangate health`: asks a running plangate's admin address whether it is alive (`/healthz`)
//! or ready (`/readyz`), for container HEALTHCHECKs and exec probes where no HTTP client is at
//! hand. Exit 0 when it answers 200, 1 otherwise.

use std::process::ExitCode;

use http_body_util::BodyExt;

use super::error::CliError;
use super::out::Out;

/// Arguments of `plangate health`.
#[derive(clap::Args)]
pub struct Args {
    /// The admin address of a running plangate (`host:port`, or `http://host:port`).
    #[arg(long, env = "PLANGATE_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    admin: String,
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
    let hostport = a.admin.trim_start_matches("http://").trim_end_matches('/');
    // A wildcard listen address is reached on loopback.
    let hostport = hostport.replace("0.0.0.0", "127.0.0.1");
    let path = if a.ready { "/readyz" } else { "/healthz" };
    let rt = super::runtime::current_thread()?;
    let answer = rt.block_on(async {
        tokio::time::timeout(timeout, get(&hostport, path))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}").into()))
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
            eprintln!("{hostport}{path}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// One HTTP/1.1 GET through hyper: (status, body).
async fn get(hostport: &str, path: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(hostport).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, hostport)
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

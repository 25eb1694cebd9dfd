//! `plangate health`: asks a running plangate's admin address whether it is alive (`/healthz`)
//! or ready (`/readyz`), for container HEALTHCHECKs and exec probes where no HTTP client is at
//! hand. Exit 0 when it answers 200, 1 otherwise.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

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
    match get(&hostport, path, timeout) {
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

/// One HTTP/1.1 GET: (status, body).
fn get(hostport: &str, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let addr = hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {hostport}\r\nconnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

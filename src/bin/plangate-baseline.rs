//! `plangate-baseline`, the yardstick of the benchmarks: an empty tonic server whose ext_authz and
//! RLS handlers answer OK at once, touching no engine. `scripts/bench.sh` measures plangate against
//! it in the same run, so the ratio shows plangate's own cost over the gRPC transport's.
//!
//! A binary of its own, not a `plangate` command, so that it stays a default tonic server: none
//! of plangate's tuning (its allocator, its connection type) applies to it.
//!
//! Usage: `plangate-baseline [--grpc-addr 127.0.0.1:50052]` (runs until SIGTERM/SIGINT).

use std::net::SocketAddr;
use std::process::ExitCode;

use plangate::baseline::serve;

fn main() -> ExitCode {
    let mut addr: SocketAddr = ([127, 0, 0, 1], 50052).into();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = match a.as_str() {
            "--grpc-addr" => args.next(),
            _ => a.strip_prefix("--grpc-addr=").map(str::to_owned),
        };
        match value.map(|v| v.parse::<SocketAddr>()) {
            Some(Ok(v)) => addr = v,
            _ => {
                eprintln!("usage: plangate-baseline [--grpc-addr HOST:PORT]");
                return ExitCode::from(2);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plangate-baseline: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        eprintln!("plangate-baseline: answering OK on {addr}");
        serve(listener, plangate::server::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plangate-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

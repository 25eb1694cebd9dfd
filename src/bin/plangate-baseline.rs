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

use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

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

/// Answers every Check with OK and every ShouldRateLimit with OK.
#[derive(Debug, Default, Clone, Copy)]
struct Baseline;

#[tonic::async_trait]
impl Authorization for Baseline {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse::with_status(Status::ok(""))))
    }
}

#[tonic::async_trait]
impl RateLimitService for Baseline {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let n = request.get_ref().descriptors.len();
        Ok(Response::new(RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: vec![
                DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                };
                n
            ],
            ..Default::default()
        }))
    }
}

/// Serves the baseline on `listener` until `shutdown` completes.
async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    use envoy_types::ext_authz::v3::pb::AuthorizationServer;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Baseline))
        .add_service(RateLimitServiceServer::new(Baseline))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// Accepted connections as tonic's own listener would give them (`TCP_NODELAY` on, as in
/// plangate): plain `TcpStream`s, none of plangate's tuning.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

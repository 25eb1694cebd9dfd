//! The benchmarks' yardstick: ext_authz and RLS handlers that answer OK at once, touching no
//! engine, on a default tonic server (`plangate-baseline`, and the allocation benchmark's
//! in-process copy); and the requests the benchmarks send. None of plangate's tuning applies to
//! the server, so that the tuning shows in the ratios.

use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};

/// The key value of bench key `i` (as `scripts/gen-keys.py` writes them).
pub fn key_value(i: usize) -> String {
    format!("bench-key-{i:012}")
}

/// The benchmarks' Check: `GET path` with the key in `x-api-key`, routed to `api`/`stage` by
/// context extensions, as an Envoy route sets them (`plangate bench`, benches/alloc.rs).
pub fn check_request(api: &str, stage: &str, path: &str, key: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: [("x-api-key".to_string(), key.to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [
                ("api".to_string(), api.to_string()),
                ("stage".to_string(), stage.to_string()),
            ]
            .into(),
            ..Default::default()
        }),
    }
}

/// The benchmarks' ShouldRateLimit: one descriptor naming the API, stage, key, method and path.
pub fn rls_request(api: &str, stage: &str, path: &str, key: &str) -> RateLimitRequest {
    let entries = [
        ("api", api),
        ("stage", stage),
        ("api_key", key),
        ("method", "GET"),
        ("path", path),
    ]
    .into_iter()
    .map(|(k, v)| Entry {
        key: k.into(),
        value: v.into(),
    })
    .collect();
    RateLimitRequest {
        domain: "plangate".into(),
        descriptors: vec![RateLimitDescriptor {
            entries,
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

/// Answers every Check with OK and every ShouldRateLimit with OK.
#[derive(Debug, Default, Clone, Copy)]
pub struct Baseline;

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
pub async fn serve(
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

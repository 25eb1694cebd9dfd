//! The baseline server: ext_authz and RLS that answer OK at once, touching no engine. Benchmarks
//! measure plangate against it in the same run, so the ratio shows plangate's own cost over
//! the gRPC transport's.

use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

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
        .serve_with_incoming_shutdown(crate::server::incoming(listener), shutdown)
        .await
}

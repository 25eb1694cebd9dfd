//! plangate's own gRPC API, `plangate.v1.Management` (proto/plangate/v1/management.proto):
//! explain a decision, read and set usage, list keys, show and reload the configuration, tail
//! decisions. Served on the admin address beside the HTTP admin API, behind the same token.

use tonic::Status;
use tonic_health::ServingStatus;

mod catalog;
mod paging;
pub mod service;

pub use service::{DEFAULT_MAX_WATCHERS, ManagementService};

pub mod pb;

/// The gRPC name of the management service.
pub const SERVICE_NAME: &str = "plangate.v1.Management";

/// The gRPC routes of the admin address: `plangate.v1.Management` (every call needs `token`,
/// when set, as `authorization: Bearer <token>` metadata), gRPC health, and server reflection
/// (v1 and v1alpha) for both. Merged with the HTTP admin routes: gRPC paths
/// (`/plangate.v1.Management/Explain`, …) never collide with them.
pub async fn routes(
    service: ManagementService,
    token: crate::admin::AdminToken,
) -> Result<axum::Router, tonic_reflection::server::Error> {
    let authorize = move |req: tonic::Request<()>| -> Result<tonic::Request<()>, Status> {
        let authorization = req.metadata().get("authorization");
        if token.admits(authorization.map(|v| v.as_bytes())) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "the management API needs `authorization: Bearer <admin token>`",
            ))
        }
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", SERVICE_NAME] {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(
        tonic::service::Routes::new(pb::management_server::ManagementServer::with_interceptor(
            service, authorize,
        ))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .into_axum_router(),
    )
}

//! `plangate serve`: the gRPC server (ext_authz + RLS + gRPC health) over one engine, with graceful
//! shutdown on SIGTERM and SIGINT (in-flight calls finish).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tonic_health::ServingStatus;

use crate::clock::SystemClock;
use crate::config::{self, ConfigErrors};
use crate::engine::Engine;
use crate::grpc::{AuthzService, RlsService};
use crate::store::MemoryStore;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub grpc_addr: SocketAddr,
    /// Admin HTTP address (`/healthz`, `/readyz`).
    pub admin_addr: SocketAddr,
    /// After a shutdown signal, how long in-flight calls may take before the remaining
    /// connections are closed. Envoy keeps its HTTP/2 connections open, so without a bound a
    /// graceful stop would never end.
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration rejected:\n{0}")]
    Config(ConfigErrors),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The gRPC service name of ext_authz, as gRPC health reports it.
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// The gRPC service name of RLS.
pub const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// Loads the config and serves until SIGTERM/SIGINT.
pub async fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let compiled = config::load_file(&opts.config).map_err(ServeError::Config)?;
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    let snap = &compiled.snapshot;
    tracing::info!(
        config = %opts.config.display(),
        apis = snap.apis.len(),
        usage_plans = snap.plans.len(),
        api_keys = snap.keys.len(),
        "configuration loaded"
    );
    let engine = Arc::new(Engine::new(
        compiled.snapshot,
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind(opts.grpc_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.grpc_addr,
            source,
        })?;
    let admin = tokio::net::TcpListener::bind(opts.admin_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.admin_addr,
            source,
        })?;
    tracing::info!(addr = %opts.admin_addr, "admin HTTP listening (/healthz, /readyz)");
    let admin_router = crate::admin::router(engine.clone());
    let admin_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, admin_router).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    let local = listener.local_addr().unwrap_or(opts.grpc_addr);
    let result = run(engine, listener, shutdown_signal(), opts.shutdown_grace).await;
    admin_task.abort();
    result?;
    tracing::info!(addr = %local, "stopped");
    Ok(())
}

/// Serves gRPC on `listener` until `shutdown` completes, then lets in-flight calls finish for
/// at most `grace`.
pub async fn run(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // The config is loaded before the server starts: SERVING from the first call.
    health.set_service_status("", ServingStatus::Serving).await;
    for service in [AUTHZ_SERVICE, RLS_SERVICE] {
        health
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "gRPC listening (ext_authz, RLS, health)");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.notify_one();
        }
    };
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(AuthzService::new(engine.clone())))
        .add_service(RateLimitServiceServer::new(RlsService::new(engine)))
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        r = server => r?,
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace = ?grace, "grace period over; closing the remaining connections");
        }
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight calls");
}

//! The admin HTTP listener (default `127.0.0.1:9090`): liveness and readiness for orchestrators.
//! Metrics, config and usage endpoints join it later (shared/SPEC.md §4).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::engine::Engine;

/// The admin routes over an engine.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(engine)
}

/// Ready once a configuration is loaded (plangate never serves without one).
async fn readyz(State(engine): State<Arc<Engine>>) -> (StatusCode, String) {
    let snap = engine.snapshot();
    (
        StatusCode::OK,
        format!(
            "ready: generation {}, {} API keys, {} usage plans\n",
            snap.generation,
            snap.keys.len(),
            snap.plans.len()
        ),
    )
}

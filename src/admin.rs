//! The admin HTTP listener (default `127.0.0.1:9090`): `/metrics`, `/healthz`, `/readyz`,
//! `GET /v1/config` (redacted), `POST /v1/reload`. With a token configured, `/v1/*` requires
//! `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::reload::{ReloadError, Reloaded, Reloader};
use crate::usage::{self, UsageError};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// `None` when plangate was not started from a file (tests): reload is then unavailable.
    pub reloader: Option<Arc<Reloader>>,
    /// The token `/v1/*` needs.
    pub token: AdminToken,
    /// Set once a shutdown began: `/readyz` answers 503 from then on, so that load balancers
    /// stop sending requests while the ones in flight finish.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let v1 = Router::new()
        .route("/v1/config", get(config))
        .route("/v1/reload", post(reload))
        .route("/v1/usageplans/{plan}/usage", get(usage_report))
        .route(
            "/v1/usageplans/{plan}/keys/{key}/usage",
            get(key_usage).patch(update_usage),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(v1)
        .with_state(state)
}

/// What the admin port answers for a path nothing serves: gRPC's UNIMPLEMENTED to a gRPC call
/// (what tonic answers), a 404 to anything else — never a 200 a probe could take for a page.
pub async fn not_found(req: Request) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/grpc"),
                (header::HeaderName::from_static("grpc-status"), "12"),
            ],
        )
            .into_response();
    }
    json_response(
        StatusCode::NOT_FOUND,
        json!({"message": format!("no such path: {}", req.uri().path())}),
    )
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The admin token: `/v1/*` and the management API need it as `Authorization: Bearer <token>`
/// (HTTP header or gRPC metadata). The one place it is checked.
#[derive(Clone, Default)]
pub struct AdminToken(Option<Arc<str>>);

impl AdminToken {
    /// `None`: every caller is admitted (see `server::admin_token` for when that may start).
    pub fn new(token: Option<Arc<str>>) -> Self {
        AdminToken(token)
    }

    /// Whether a token is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether an `authorization` value (absent: `None`) grants access. Compared in time
    /// independent of where a wrong token differs.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.0 else {
            return true;
        };
        let presented = authorization
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        presented.len() == token.len()
            && presented
                .iter()
                .zip(token.as_bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION);
    if !state.token.admits(authorization.map(|v| v.as_bytes())) {
        return json_response(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}));
    }
    next.run(req).await
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Ready once a configuration is loaded (plangate never serves without one) and while the
/// counter store answers.
async fn readyz(State(state): State<AdminState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining (shutting down)\n",
        )
            .into_response();
    }
    let snap = state.engine.snapshot();
    let now = state.engine.clock().now();
    if let Some((n, since)) = state.metrics.decisions_failing(now) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the counter store failed the last {n} decisions (since {})\n",
                crate::clock::format_rfc3339(since)
            ),
        )
            .into_response();
    }
    if let Err(e) = state.engine.store().ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: counter store unreachable: {}\n", e.message()),
        )
            .into_response();
    }
    let mut body = format!(
        "ready: generation {}, {} API keys, {} usage plans\n",
        snap.generation,
        snap.keys.len(),
        snap.plans.len()
    );
    // Still serving (the counts are in memory), but an operator must know.
    if let Some((since, error)) = state.metrics.persist_failing() {
        body.push_str(&format!(
            "persistence: failing since {} ({error}); counts are kept in memory until a flush succeeds\n",
            crate::clock::format_rfc3339(since)
        ));
    }
    (StatusCode::OK, body).into_response()
}

async fn reload(State(state): State<AdminState>) -> Response {
    let Some(reloader) = &state.reloader else {
        return json_response(
            StatusCode::NOT_IMPLEMENTED,
            json!({"message": "not started from a configuration file"}),
        );
    };
    match reloader.reload("admin").await {
        Ok(Reloaded::Swapped { generation }) => json_response(
            StatusCode::OK,
            json!({"result": "success", "generation": generation}),
        ),
        Ok(Reloaded::Unchanged) => json_response(
            StatusCode::OK,
            json!({"result": "unchanged", "generation": state.engine.snapshot().generation}),
        ),
        Err(e) => json_response(
            // The files are wrong: 422; anything else (a time budget, the store): 503.
            match e {
                ReloadError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            json!({
                "result": "error",
                "generation": state.engine.snapshot().generation,
                "errors": e.messages(),
            }),
        ),
    }
}

fn usage_error(e: UsageError) -> Response {
    let status = match &e {
        UsageError::UnknownPlan(_)
        | UsageError::UnknownKey(_)
        | UsageError::KeyNotInPlan { .. } => StatusCode::NOT_FOUND,
        UsageError::NoQuota(_) | UsageError::BadRequest(_) => StatusCode::BAD_REQUEST,
        UsageError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    json_response(status, json!({"message": e.to_string()}))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageQuery {
    start_date: String,
    end_date: String,
    key_id: Option<String>,
    /// AWS paging: keys per page (1 to 500; without it, every key) and where a page starts.
    limit: Option<usize>,
    position: Option<String>,
}

/// AWS GetUsage.
async fn usage_report(
    State(state): State<AdminState>,
    Path(plan): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Response {
    let result = async {
        let start = usage::parse_date(&q.start_date)?;
        let end = usage::parse_date(&q.end_date)?;
        let page = usage::Page {
            limit: q.limit,
            position: q.position.clone(),
        };
        let now = state.engine.clock().now();
        usage::report_page(
            &state.engine,
            &plan,
            start,
            end,
            q.key_id.as_deref(),
            now,
            &page,
        )
        .await
    }
    .await;
    match result {
        Ok(r) => json_response(StatusCode::OK, json!(r)),
        Err(e) => usage_error(e),
    }
}

/// One key's current quota period.
async fn key_usage(
    State(state): State<AdminState>,
    Path((plan, key)): Path<(String, String)>,
) -> Response {
    let now = state.engine.clock().now();
    match usage::current(&state.engine, &plan, &key, now).await {
        Ok(c) => json_response(StatusCode::OK, json!(c)),
        Err(e) => usage_error(e),
    }
}

/// AWS UpdateUsage: sets the remaining quota of the current period.
async fn update_usage(
    State(state): State<AdminState>,
    Path((plan, key)): Path<(String, String)>,
    body: Result<axum::Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let remaining = match body
        .map_err(|e| e.body_text())
        .and_then(|axum::Json(b)| usage::remaining_of(&b))
    {
        Ok(r) => r,
        Err(message) => {
            return json_response(StatusCode::BAD_REQUEST, json!({ "message": message }));
        }
    };
    let now = state.engine.clock().now();
    match usage::update(&state.engine, &plan, &key, remaining, now).await {
        Ok(c) => {
            tracing::info!(plan = %plan, key_id = %key, remaining, "usage updated");
            json_response(StatusCode::OK, json!(c))
        }
        Err(e) => usage_error(e),
    }
}

async fn config(State(state): State<AdminState>) -> Response {
    json_response(
        StatusCode::OK,
        crate::config::render::redacted(&state.engine.snapshot()),
    )
}

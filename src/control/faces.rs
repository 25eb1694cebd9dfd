//! The REST face of the catalog's operations (`crate::catalog::ops`) and of usage reports:
//! AWS's paths, bodies, status codes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::aws::{AwsError, MAX_BODY, aws_json, catalog_error, key_json, plan_json, with_position};
use crate::catalog::ops::{self, CatalogError, CreateApiKey, CreateUsagePlan, Patch};
use crate::catalog::views;
use crate::engine::Engine;
use crate::usage::{self, UsageError};

type Query_<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// A refusal of a request's form: AWS's error and its message.
type Refused = (AwsError, String);

/// The body, whole (at most [`MAX_BODY`]).
async fn body_of(body: Body) -> Result<Bytes, Refused> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        (
            AwsError::TooLarge,
            format!("Request body over {MAX_BODY} bytes"),
        )
    })
}

/// A JSON body as `T` (an empty body as `T`'s default).
async fn json_of<T: serde::de::DeserializeOwned + Default>(body: Body) -> Result<T, Refused> {
    let bytes = body_of(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| (AwsError::BadRequest, format!("Invalid request body: {e}")))
}

fn query<T>(q: Query_<T>) -> Result<T, Refused> {
    q.map(|Query(q)| q)
        .map_err(|e| (AwsError::BadRequest, format!("Invalid query string: {e}")))
}

macro_rules! tried {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err((error, message)) => return error.answer(message),
        }
    };
}

fn answer<T>(r: Result<T, CatalogError>, ok: impl FnOnce(T) -> Response) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => catalog_error(e),
    }
}

#[derive(serde::Deserialize, Default)]
pub struct CreateKeyQuery {
    mode: Option<String>,
    format: Option<String>,
    failonwarnings: Option<bool>,
}

/// `CreateApiKey` (`POST /apikeys`), or `ImportApiKeys` (`POST /apikeys?mode=import`).
pub async fn create_api_key(
    State(engine): State<Arc<Engine>>,
    q: Query_<CreateKeyQuery>,
    body: Body,
) -> Response {
    let q = tried!(query(q));
    if q.mode.as_deref() == Some("import") {
        return import_api_keys(engine, q, body).await;
    }
    let input: CreateApiKey = tried!(json_of(body).await);
    let made = engine
        .change(|st, snap, now| ops::create_api_key(st, snap, &input, now))
        .await;
    answer(made, |new| {
        tracing::info!(key_id = %new.record.id, "API key created");
        let mut v = key_json(&new.record);
        v["value"] = json!(new.value);
        aws_json(StatusCode::CREATED, v)
    })
}

async fn import_api_keys(engine: Arc<Engine>, q: CreateKeyQuery, body: Body) -> Response {
    if q.format.as_deref() != Some("csv") {
        return AwsError::BadRequest.answer("Invalid format: only format=csv is supported");
    }
    let bytes = tried!(body_of(body).await);
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return AwsError::BadRequest.answer("Invalid API key file: not UTF-8");
    };
    let snap = engine.snapshot();
    let now = engine.clock().now();
    let fail = q.failonwarnings.unwrap_or(false);
    let done = engine
        .catalog()
        .write(|st| ops::import_api_keys(st, &snap, text, fail, now))
        .await;
    answer(done, |out| {
        tracing::info!(
            keys = out.ids.len(),
            warnings = out.warnings.len(),
            "API keys imported"
        );
        aws_json(
            StatusCode::CREATED,
            json!({ "ids": out.ids, "warnings": out.warnings }),
        )
    })
}

/// `UpdateApiKey`.
pub async fn update_api_key(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let patch: Patch = tried!(json_of(body).await);
    let done = engine
        .change(|st, snap, now| ops::update_api_key(st, snap, &id, &patch, now))
        .await;
    answer(done, |k| {
        tracing::info!(key_id = %k.id, enabled = k.enabled, "API key updated");
        aws_json(StatusCode::OK, key_json(&k))
    })
}

/// `DeleteApiKey`.
pub async fn delete_api_key(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> Response {
    let done = engine
        .change(|st, snap, _| ops::delete_api_key(st, snap, &id))
        .await;
    answer(done, |()| {
        tracing::info!(key_id = %id, "API key deleted");
        accepted()
    })
}

fn accepted() -> Response {
    let mut r = aws_json(StatusCode::ACCEPTED, json!({}));
    *r.body_mut() = Body::empty();
    r
}

/// `CreateUsagePlan`.
pub async fn create_usage_plan(State(engine): State<Arc<Engine>>, body: Body) -> Response {
    let input: CreateUsagePlan = tried!(json_of(body).await);
    let made = engine
        .change(|st, snap, now| ops::create_usage_plan(st, snap, &input, now))
        .await;
    answer(made, |p| {
        tracing::info!(plan = %p.id, "usage plan created");
        aws_json(StatusCode::CREATED, plan_json(&p))
    })
}

#[derive(serde::Deserialize, Default)]
pub struct PlansQuery {
    limit: Option<usize>,
    position: Option<String>,
    #[serde(rename = "keyId")]
    key_id: Option<String>,
}

/// `GetUsagePlans`.
pub async fn usage_plans(State(engine): State<Arc<Engine>>, q: Query_<PlansQuery>) -> Response {
    let q = tried!(query(q));
    let snap = engine.snapshot();
    let page = views::Page {
        limit: q.limit,
        position: q.position,
    };
    let listed = views::plans(&engine.catalog().read(), &snap, q.key_id.as_deref(), &page);
    answer(listed, |(plans, position)| {
        let item: Vec<Value> = plans.iter().map(plan_json).collect();
        aws_json(
            StatusCode::OK,
            with_position(json!({ "item": item }), position),
        )
    })
}

/// `GetUsagePlan`.
pub async fn usage_plan(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> Response {
    let snap = engine.snapshot();
    let found = views::plan(&engine.catalog().read(), &snap, &id);
    answer(found, |(p, _)| aws_json(StatusCode::OK, plan_json(&p)))
}

/// `UpdateUsagePlan`.
pub async fn update_usage_plan(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let patch: Patch = tried!(json_of(body).await);
    let done = engine
        .change(|st, snap, now| ops::update_usage_plan(st, snap, &id, &patch, now))
        .await;
    answer(done, |p| {
        tracing::info!(plan = %p.id, "usage plan updated");
        aws_json(StatusCode::OK, plan_json(&p))
    })
}

/// `DeleteUsagePlan`.
pub async fn delete_usage_plan(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> Response {
    let done = engine
        .change(|st, snap, _| ops::delete_usage_plan(st, snap, &id))
        .await;
    answer(done, |()| {
        tracing::info!(plan = %id, "usage plan deleted");
        accepted()
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreatePlanKey {
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    key_type: Option<String>,
}

fn plan_key_json(k: &views::PlanKey) -> Value {
    let mut v = json!({ "id": k.id, "type": "API_KEY" });
    if let Some(n) = &k.name {
        v["name"] = json!(n);
    }
    v
}

/// `CreateUsagePlanKey`.
pub async fn create_usage_plan_key(
    State(engine): State<Arc<Engine>>,
    Path(plan): Path<String>,
    body: Body,
) -> Response {
    let input: CreatePlanKey = tried!(json_of(body).await);
    let Some(key) = input.key_id.filter(|k| !k.is_empty()) else {
        return AwsError::BadRequest.answer("keyId is required");
    };
    let done = engine
        .change(|st, snap, _| {
            ops::create_usage_plan_key(st, snap, &plan, &key, input.key_type.as_deref())
        })
        .await;
    answer(done, |k| {
        tracing::info!(plan = %plan, key_id = %k.id, "key added to usage plan");
        aws_json(
            StatusCode::CREATED,
            plan_key_json(&views::PlanKey {
                id: k.id,
                name: k.name,
            }),
        )
    })
}

#[derive(serde::Deserialize, Default)]
pub struct PlanKeysQuery {
    limit: Option<usize>,
    position: Option<String>,
    name: Option<String>,
}

/// `GetUsagePlanKeys`.
pub async fn usage_plan_keys(
    State(engine): State<Arc<Engine>>,
    Path(plan): Path<String>,
    q: Query_<PlanKeysQuery>,
) -> Response {
    let q = tried!(query(q));
    let snap = engine.snapshot();
    let page = views::Page {
        limit: q.limit,
        position: q.position,
    };
    let listed = views::plan_keys(
        &engine.catalog().read(),
        &snap,
        &plan,
        q.name.as_deref(),
        &page,
    );
    answer(listed, |(keys, position)| {
        let item: Vec<Value> = keys.iter().map(plan_key_json).collect();
        aws_json(
            StatusCode::OK,
            with_position(json!({ "item": item }), position),
        )
    })
}

/// `GetUsagePlanKey`.
pub async fn usage_plan_key(
    State(engine): State<Arc<Engine>>,
    Path((plan, key)): Path<(String, String)>,
) -> Response {
    let snap = engine.snapshot();
    let found = views::plan_key(&engine.catalog().read(), &snap, &plan, &key);
    answer(found, |k| aws_json(StatusCode::OK, plan_key_json(&k)))
}

/// `DeleteUsagePlanKey`.
pub async fn delete_usage_plan_key(
    State(engine): State<Arc<Engine>>,
    Path((plan, key)): Path<(String, String)>,
) -> Response {
    let done = engine
        .change(|st, snap, _| ops::delete_usage_plan_key(st, snap, &plan, &key))
        .await;
    answer(done, |()| {
        tracing::info!(plan = %plan, key_id = %key, "key removed from usage plan");
        accepted()
    })
}

fn usage_error(e: UsageError) -> Response {
    let kind = match &e {
        UsageError::UnknownPlan(_)
        | UsageError::UnknownKey(_)
        | UsageError::KeyNotInPlan { .. } => AwsError::NotFound,
        UsageError::NoQuota(_) | UsageError::BadRequest(_) => AwsError::BadRequest,
        UsageError::Store(_) => AwsError::ServiceUnavailable,
    };
    kind.answer(e.to_string())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageQuery {
    start_date: Option<String>,
    end_date: Option<String>,
    key_id: Option<String>,
    limit: Option<usize>,
    position: Option<String>,
}

/// `GetUsage`: AWS's `Usage` — daily `[used, remaining]` per key under `values`.
pub async fn get_usage(
    State(engine): State<Arc<Engine>>,
    Path(plan): Path<String>,
    q: Query_<UsageQuery>,
) -> Response {
    let q = tried!(query(q));
    let (Some(start), Some(end)) = (q.start_date, q.end_date) else {
        return AwsError::BadRequest.answer("startDate and endDate are required");
    };
    let result = async {
        let start = usage::parse_date(&start)?;
        let end = usage::parse_date(&end)?;
        let page = usage::Page {
            limit: q.limit,
            position: q.position,
        };
        let now = engine.clock().now();
        usage::report_page(&engine, &plan, start, end, q.key_id.as_deref(), now, &page).await
    }
    .await;
    match result {
        Ok(r) => aws_json(StatusCode::OK, usage::aws_usage(&r)),
        Err(e) => usage_error(e),
    }
}

/// `UpdateUsage`: `replace /remaining`; answers AWS's `Usage` for the key's current period.
pub async fn update_usage(
    State(engine): State<Arc<Engine>>,
    Path((plan, key)): Path<(String, String)>,
    body: Body,
) -> Response {
    let bytes = tried!(body_of(body).await);
    let remaining = match serde_json::from_slice::<Value>(&bytes)
        .map_err(|e| format!("Invalid request body: {e}"))
        .and_then(|b| usage::remaining_of(&b))
    {
        Ok(r) => r,
        Err(message) => return AwsError::BadRequest.answer(message),
    };
    let now = engine.clock().now();
    match usage::update(&engine, &plan, &key, remaining, now).await {
        Ok(c) => {
            tracing::info!(plan = %plan, key_id = %key, remaining, "usage updated");
            aws_json(StatusCode::OK, usage::aws_current(&c))
        }
        Err(e) => usage_error(e),
    }
}

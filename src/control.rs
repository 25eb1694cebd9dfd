//! The control plane's REST face: Amazon API Gateway's own REST API — paths, JSON shapes on the
//! wire, errors — on the admin address, so that `aws apigateway … --endpoint-url` and boto3 with
//! `endpoint_url` work unchanged (docs/control-plane.md).
//!
//! So far, read-only, from the configuration in force: `GetRestApis`, `GetStages`, `GetApiKeys`,
//! `GetApiKey`; every call authenticated by Signature Version 4 or the admin token. The wire
//! is AWS's, not the SDKs' renamed view: lists carry `item`; errors carry `x-amzn-ErrorType`
//! and `{"message": …}`.

pub mod aws;
pub mod credentials;
mod faces;
pub mod sigv4;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;

use crate::admin::AdminToken;
use crate::catalog::views;
use crate::clock::Clock;
use crate::engine::Engine;
use crate::snapshot::{Stage, Throttle};
pub use aws::{AwsError, MAX_BODY};
use aws::{aws_json, catalog_error, key_json, with_position};
use credentials::{CredentialsFile, Role};

/// Who may call the REST face: AWS clients signing with a key of `credentials` (Signature
/// Version 4), or a caller presenting the admin token as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Access {
    pub token: AdminToken,
    /// Without a credentials file, only the token (or, with no token, anyone: see
    /// `server::admin_token` for when that may start).
    pub credentials: Option<Arc<CredentialsFile>>,
}

/// The REST routes, on the engine's configuration.
pub fn router(engine: Arc<Engine>, access: Access) -> Router {
    Router::new()
        .route("/restapis", get(rest_apis))
        .route("/restapis/{api}/stages", get(stages))
        .route("/apikeys", get(api_keys).post(faces::create_api_key))
        .route(
            "/apikeys/{key}",
            get(api_key)
                .patch(faces::update_api_key)
                .delete(faces::delete_api_key),
        )
        .route(
            "/usageplans",
            get(faces::usage_plans).post(faces::create_usage_plan),
        )
        .route(
            "/usageplans/{plan}",
            get(faces::usage_plan)
                .patch(faces::update_usage_plan)
                .delete(faces::delete_usage_plan),
        )
        .route(
            "/usageplans/{plan}/keys",
            get(faces::usage_plan_keys).post(faces::create_usage_plan_key),
        )
        .route(
            "/usageplans/{plan}/keys/{key}",
            get(faces::usage_plan_key).delete(faces::delete_usage_plan_key),
        )
        .route("/usageplans/{plan}/usage", get(faces::get_usage))
        .route(
            "/usageplans/{plan}/keys/{key}/usage",
            axum::routing::patch(faces::update_usage),
        )
        .route_layer(axum::middleware::from_fn_with_state(access, authenticate))
        .with_state(engine)
}

/// Admits a signed or token-bearing call, as [`Access`] says; AWS's errors otherwise.
async fn authenticate(State(access): State<Access>, req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let signed = authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 "));
    if !signed {
        // The bearer token, or nothing when neither a token nor credentials are set.
        let anyone = !access.token.is_set() && access.credentials.is_none();
        let bearer = access.token.is_set()
            && access
                .token
                .admits(authorization.as_deref().map(str::as_bytes));
        return if anyone || bearer {
            next.run(req).await
        } else {
            AwsError::MissingAuthenticationToken.answer("Missing Authentication Token")
        };
    }
    let Some(credentials) = &access.credentials else {
        return AwsError::UnrecognizedClient.answer(
            "The security token included in the request is invalid (no --aws-credentials file)",
        );
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return AwsError::TooLarge.answer(format!("Request body over {MAX_BODY} bytes"));
    };
    if let Err((error, message)) = check_signature(&parts, &body, credentials) {
        return error.answer(message);
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(body)))
        .await
}

/// The signature of a call: its key must be known, the signature its, the time within 15
/// minutes, and a `read` key may only read.
fn check_signature(
    parts: &axum::http::request::Parts,
    body: &[u8],
    credentials: &CredentialsFile,
) -> Result<(), (AwsError, String)> {
    let keys = credentials.keys();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let signed = sigv4::Signed {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        header: &header,
        body,
    };
    let now = crate::clock::SystemClock.now();
    let key = match sigv4::verify(&signed, now, |id| keys.get(id).map(|(s, _)| s.as_str())) {
        Ok(key) => key,
        Err(sigv4::SigError::UnknownKey) => {
            return Err((
                AwsError::UnrecognizedClient,
                "The security token included in the request is invalid".to_owned(),
            ));
        }
        Err(e) => return Err((AwsError::InvalidSignature, e.to_string())),
    };
    let role = keys.get(&key).map(|(_, r)| *r);
    if role == Some(Role::Read) && parts.method != axum::http::Method::GET {
        return Err((
            AwsError::AccessDenied,
            format!("Access key {key} may only read"),
        ));
    }
    Ok(())
}

/// `GetApiKeys`' query: paging (`limit`, 25 by default, at most 500; `position`, where the
/// previous page stopped), and filters (`name`, a prefix of the key's name, as AWS's
/// `nameQuery`; `customerId`). `includeValues` is accepted; values are never kept, so never
/// shown.
#[derive(serde::Deserialize)]
struct KeysQuery {
    limit: Option<usize>,
    position: Option<String>,
    name: Option<String>,
    #[serde(rename = "customerId")]
    customer_id: Option<String>,
}

/// `GetApiKeys`: the keys of the configuration and of the runtime catalog, by id, a page at a
/// time.
async fn api_keys(
    State(engine): State<Arc<Engine>>,
    q: Result<axum::extract::Query<KeysQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = q else {
        return AwsError::BadRequest.answer("Invalid query string");
    };
    let snap = engine.snapshot();
    let filter = views::KeyFilter {
        name: q.name,
        customer_id: q.customer_id,
    };
    let page = views::Page {
        limit: q.limit,
        position: q.position,
    };
    let listed = views::keys(&engine.catalog().read(), &snap, &filter, &page);
    match listed {
        Ok((keys, position)) => {
            let item: Vec<Value> = keys.iter().map(key_json).collect();
            aws_json(
                StatusCode::OK,
                with_position(json!({ "item": item }), position),
            )
        }
        Err(e) => catalog_error(e),
    }
}

/// `GetApiKey`: one key, by id.
async fn api_key(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> Response {
    let snap = engine.snapshot();
    let found = views::key(&engine.catalog().read(), &snap, &id);
    match found {
        Ok((k, _)) => aws_json(StatusCode::OK, key_json(&k)),
        Err(e) => catalog_error(e),
    }
}

/// `GetRestApis`: every API of the configuration, by its id (its name in the file).
async fn rest_apis(State(engine): State<std::sync::Arc<Engine>>) -> Response {
    let snap = engine.snapshot();
    let mut names: Vec<&String> = snap.apis.keys().collect();
    names.sort();
    let item: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let source = match snap.apis[name]
                .key_source
                .as_ref()
                .unwrap_or(&snap.key_source)
            {
                crate::snapshot::KeySource::Header(_) => "HEADER",
                crate::snapshot::KeySource::Metadata { .. } => "AUTHORIZER",
            };
            json!({ "id": name, "name": name, "apiKeySource": source })
        })
        .collect();
    aws_json(StatusCode::OK, json!({ "item": item }))
}

/// `GetStages`: an API's stages, each with its throttles as AWS's method settings (`*/*` for
/// the stage default, `~1pets/GET` for a method).
async fn stages(State(engine): State<std::sync::Arc<Engine>>, Path(api): Path<String>) -> Response {
    let snap = engine.snapshot();
    let Some(a) = snap.apis.get(&api) else {
        return AwsError::NotFound.answer(format!("Invalid API identifier specified {api}"));
    };
    let mut names: Vec<&String> = a.stages.keys().collect();
    names.sort();
    let item: Vec<Value> = names
        .into_iter()
        .map(|name| stage_json(&a.stages[name]))
        .collect();
    aws_json(StatusCode::OK, json!({ "item": item }))
}

fn stage_json(s: &Stage) -> Value {
    let mut settings = serde_json::Map::new();
    if let Some(t) = &s.throttle {
        settings.insert("*/*".to_owned(), method_setting(t));
    }
    for m in &s.methods {
        if let (Some(t), Some(key)) = (&m.throttle, crate::migrate::aws_settings_key(&m.name)) {
            settings.insert(key, method_setting(t));
        }
    }
    json!({ "stageName": &*s.name, "methodSettings": settings })
}

fn method_setting(t: &Throttle) -> Value {
    json!({ "throttlingRateLimit": t.rate, "throttlingBurstLimit": t.spec.burst })
}

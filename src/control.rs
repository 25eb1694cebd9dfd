//! The control plane's REST face: Amazon API Gateway's own REST API — paths, JSON shapes on the
//! wire, errors — on the admin address, so that `aws apigateway … --endpoint-url` and boto3 with
//! `endpoint_url` work unchanged (docs/control-plane.md).
//!
//! So far, read-only, from the configuration in force: `GetRestApis`, `GetStages`, `GetApiKeys`,
//! `GetApiKey`; every call authenticated by Signature Version 4 or the admin token. The wire
//! is AWS's, not the SDKs' renamed view: lists carry `item`; errors carry `x-amzn-ErrorType`
//! and `{"message": …}`.

pub mod credentials;
pub mod sigv4;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;

use crate::admin::AdminToken;
use crate::clock::Clock;
use crate::engine::Engine;
use crate::snapshot::{Stage, Throttle};
use credentials::{CredentialsFile, Role};

/// AWS's error types, as `x-amzn-ErrorType` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsError {
    NotFound,
    BadRequest,
    Conflict,
    Unauthorized,
    LimitExceeded,
    /// A request with no signature where one is needed.
    MissingAuthenticationToken,
    /// A signature that is malformed, stale, or does not match.
    InvalidSignature,
    /// An access key the credentials file does not hold.
    UnrecognizedClient,
    /// A `read` key asking for a change.
    AccessDenied,
    /// A body over [`MAX_BODY`].
    TooLarge,
}

impl AwsError {
    fn name(self) -> &'static str {
        match self {
            AwsError::NotFound => "NotFoundException",
            AwsError::BadRequest => "BadRequestException",
            AwsError::Conflict => "ConflictException",
            AwsError::Unauthorized => "UnauthorizedException",
            AwsError::LimitExceeded => "LimitExceededException",
            AwsError::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            AwsError::InvalidSignature => "InvalidSignatureException",
            AwsError::UnrecognizedClient => "UnrecognizedClientException",
            AwsError::AccessDenied => "AccessDeniedException",
            AwsError::TooLarge => "RequestEntityTooLargeException",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            AwsError::NotFound => StatusCode::NOT_FOUND,
            AwsError::BadRequest => StatusCode::BAD_REQUEST,
            AwsError::Conflict => StatusCode::CONFLICT,
            AwsError::Unauthorized => StatusCode::UNAUTHORIZED,
            AwsError::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            AwsError::MissingAuthenticationToken
            | AwsError::InvalidSignature
            | AwsError::UnrecognizedClient
            | AwsError::AccessDenied => StatusCode::FORBIDDEN,
            AwsError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The answer AWS gives: its status, `x-amzn-ErrorType`, and `{"message": …}`.
    pub fn answer(self, message: impl Into<String>) -> Response {
        let mut r = aws_json(self.status(), json!({ "message": message.into() }));
        r.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.name()));
        r
    }
}

fn aws_json(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The largest request body read (a signature covers the body, so it is read whole).
pub const MAX_BODY: usize = 1 << 20;

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
        .route("/apikeys", get(api_keys))
        .route("/apikeys/{key}", get(api_key))
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

/// `GetApiKeys`: the keys of the configuration, by id, a page at a time.
async fn api_keys(
    State(engine): State<Arc<Engine>>,
    axum::extract::Query(q): axum::extract::Query<KeysQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(25);
    if !(1..=500).contains(&limit) {
        return AwsError::BadRequest.answer("limit must be from 1 to 500");
    }
    let snap = engine.snapshot();
    let mut keys: Vec<&crate::snapshot::ApiKey> = snap
        .keys
        .iter()
        .filter(|k| q.position.as_deref().is_none_or(|p| &*k.id >= p))
        .filter(|k| {
            q.name
                .as_deref()
                .is_none_or(|n| k.name.as_deref().is_some_and(|m| m.starts_with(n)))
        })
        .filter(|k| q.customer_id.is_none() || k.customer_id.as_deref() == q.customer_id.as_deref())
        .collect();
    // Only the page and the one after it need their order: picked in O(n), then sorted.
    if keys.len() > limit + 1 {
        keys.select_nth_unstable_by(limit, |a, b| a.id.cmp(&b.id));
        keys.truncate(limit + 1);
    }
    keys.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let next = keys.get(limit).map(|k| k.id.to_string());
    keys.truncate(limit);
    let item: Vec<Value> = keys.into_iter().map(key_json).collect();
    let mut page = json!({ "item": item });
    if let Some(next) = next {
        page["position"] = json!(next);
    }
    aws_json(StatusCode::OK, page)
}

/// `GetApiKey`: one key, by id.
async fn api_key(State(engine): State<Arc<Engine>>, Path(id): Path<String>) -> Response {
    let snap = engine.snapshot();
    match snap.keys.iter().find(|k| *k.id == *id) {
        Some(k) => aws_json(StatusCode::OK, key_json(k)),
        None => AwsError::NotFound.answer(format!("Invalid API Key identifier specified {id}")),
    }
}

/// A key as AWS's `ApiKey`: no value (plangate keeps only its hash); `stageKeys` empty (AWS's
/// stage keys predate usage plans).
fn key_json(k: &crate::snapshot::ApiKey) -> Value {
    let mut v = json!({ "id": &*k.id, "enabled": k.enabled, "stageKeys": [] });
    if let Some(name) = &k.name {
        v["name"] = json!(&**name);
    }
    if let Some(c) = &k.customer_id {
        v["customerId"] = json!(&**c);
    }
    v
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

//! The control plane's REST face: Amazon API Gateway's own REST API — paths, JSON shapes on the
//! wire, errors — on the admin address, so that `aws apigateway … --endpoint-url` and boto3 with
//! `endpoint_url` work unchanged (docs/control-plane.md).
//!
//! So far: `GetRestApis` and `GetStages`, read-only, from the configuration in force. The wire
//! is AWS's, not the SDKs' renamed view: lists carry `item`; errors carry `x-amzn-ErrorType`
//! and `{"message": …}`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::admin::AdminToken;
use crate::engine::Engine;
use crate::snapshot::{Stage, Throttle};

/// AWS's error types, as `x-amzn-ErrorType` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsError {
    NotFound,
    BadRequest,
    Conflict,
    Unauthorized,
    LimitExceeded,
}

impl AwsError {
    fn name(self) -> &'static str {
        match self {
            AwsError::NotFound => "NotFoundException",
            AwsError::BadRequest => "BadRequestException",
            AwsError::Conflict => "ConflictException",
            AwsError::Unauthorized => "UnauthorizedException",
            AwsError::LimitExceeded => "LimitExceededException",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            AwsError::NotFound => StatusCode::NOT_FOUND,
            AwsError::BadRequest => StatusCode::BAD_REQUEST,
            AwsError::Conflict => StatusCode::CONFLICT,
            AwsError::Unauthorized => StatusCode::UNAUTHORIZED,
            AwsError::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
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

/// The REST routes, on the engine's configuration; every call needs the admin token (when one
/// is set) as `Authorization: Bearer <token>`.
pub fn router(engine: std::sync::Arc<Engine>, token: AdminToken) -> Router {
    Router::new()
        .route("/restapis", get(rest_apis))
        .route("/restapis/{api}/stages", get(stages))
        .route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let admitted = token.admits(
                    req.headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                );
                async move {
                    if admitted {
                        next.run(req).await
                    } else {
                        AwsError::Unauthorized.answer("Unauthorized")
                    }
                }
            },
        ))
        .with_state(engine)
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
        if let (Some(t), Some(key)) = (&m.throttle, settings_key(&m.name)) {
            settings.insert(key, method_setting(t));
        }
    }
    json!({ "stageName": &*s.name, "methodSettings": settings })
}

fn method_setting(t: &Throttle) -> Value {
    json!({ "throttlingRateLimit": t.rate, "throttlingBurstLimit": t.spec.burst })
}

/// A method key (`/pets/{petId}/GET`, `//GET` for the root) as AWS's method settings key
/// (`~1pets~1{petId}/GET`, `~1/GET`): the resource path with `~` written `~0` and `/` `~1`.
fn settings_key(method: &str) -> Option<String> {
    let (path, verb) = method.rsplit_once('/')?;
    let path = if path.is_empty() { "/" } else { path };
    Some(format!(
        "{}/{verb}",
        path.replace('~', "~0").replace('/', "~1")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_keys_become_aws_settings_keys() {
        assert_eq!(settings_key("/pets/GET").as_deref(), Some("~1pets/GET"));
        assert_eq!(
            settings_key("/pets/{petId}/POST").as_deref(),
            Some("~1pets~1{petId}/POST")
        );
        assert_eq!(settings_key("//GET").as_deref(), Some("~1/GET"));
        assert_eq!(settings_key("/a~b/GET").as_deref(), Some("~1a~0b/GET"));
    }
}

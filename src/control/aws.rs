//! AWS's REST wire: errors (`x-amzn-ErrorType`, `{"message": …}`), JSON answers, and the
//! catalog's objects in AWS's shapes — shared by every handler of the REST face.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::catalog::records::{ApiKeyRecord, UsagePlanRecord};
use crate::catalog::{CatalogError, ErrorKind};

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
    /// The store failed; a retry may succeed.
    ServiceUnavailable,
}

impl AwsError {
    pub fn name(self) -> &'static str {
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
            AwsError::ServiceUnavailable => "ServiceUnavailableException",
        }
    }

    pub fn status(self) -> StatusCode {
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
            AwsError::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
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

pub fn aws_json(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The largest request body read (a signature covers the body, so it is read whole).
pub const MAX_BODY: usize = 1 << 20;

pub fn with_position(mut page: Value, position: Option<String>) -> Value {
    if let Some(p) = position {
        page["position"] = json!(p);
    }
    page
}

/// A key as AWS's `ApiKey`: never its value or its hash; no dates for the file's keys (the
/// file has none).
pub fn key_json(k: &ApiKeyRecord) -> Value {
    let mut v = serde_json::to_value(k).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("valueSha256");
        if k.created_date == 0 {
            o.remove("createdDate");
            o.remove("lastUpdatedDate");
        }
    }
    v
}

/// A plan as AWS's `UsagePlan` (without plangate's own fields).
pub fn plan_json(p: &UsagePlanRecord) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("initialPeriod");
    }
    v
}

/// A catalog error as AWS answers it.
pub fn catalog_error(e: CatalogError) -> Response {
    let kind = match e.kind {
        ErrorKind::NotFound => AwsError::NotFound,
        ErrorKind::BadRequest => AwsError::BadRequest,
        ErrorKind::Conflict => AwsError::Conflict,
        ErrorKind::LimitExceeded => AwsError::LimitExceeded,
        ErrorKind::Unavailable => AwsError::ServiceUnavailable,
    };
    kind.answer(e.message)
}

//! Envoy ext_authz: `envoy.service.auth.v3.Authorization/Check`.
//!
//! Envoy quirks handled here: `attributes.request.http.path` includes the query string (cut off
//! before matching); header names arrive lower-case, repeated headers joined with `,`; with
//! `encode_raw_headers` the headers come in `header_map` instead of `headers`. A `CheckResponse`
//! whose status is not OK is a denial, and its `denied_response` is what the client sees.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tonic::{Request, Response, Status};

use super::answer::{self, Answer, IDENTITY_PREFIX};
use crate::engine::{self, Decision, Engine};
use crate::metrics::{Metrics, Service};
use crate::snapshot::KeySource;

/// Longest key value worth hashing: longer ones cannot be configured keys (AWS bound).
const MAX_KEY_LEN: usize = crate::config::compile::KEY_MAX_CHARS * 4;

/// The ext_authz service over an engine.
pub struct AuthzService {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
}

impl AuthzService {
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Self {
        AuthzService { engine, metrics }
    }
}

/// Reads a header from either encoding Envoy may use.
fn header<'a>(
    http: &'a envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
    name: &str,
) -> Option<&'a str> {
    if let Some(v) = http.headers.get(name) {
        return Some(v.as_str());
    }
    http.header_map.as_ref().and_then(|m| {
        m.headers.iter().find(|h| h.key == name).map(|h| {
            if h.value.is_empty() {
                std::str::from_utf8(&h.raw_value).unwrap_or("")
            } else {
                h.value.as_str()
            }
        })
    })
}

/// Follows `path` through a metadata struct to a string.
fn metadata_key<'a>(root: &'a Struct, path: &[String]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    let mut v: &Value = root.fields.get(first)?;
    for p in rest {
        match &v.kind {
            Some(Kind::StructValue(s)) => v = s.fields.get(p)?,
            _ => return None,
        }
    }
    match &v.kind {
        Some(Kind::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// Dynamic metadata for access logs (namespace `envoy.filters.http.ext_authz`).
fn metadata(d: &Decision) -> Struct {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("outcome".to_owned(), string_value(d.outcome.as_str()));
    let opt = [
        ("api_key_id", d.key_id.as_deref()),
        ("usage_plan", d.plan_id.as_deref()),
        ("customer_id", d.customer_id.as_deref()),
        ("api", d.api.as_deref()),
        ("stage", d.stage.as_deref()),
        ("method", d.method.as_deref()),
        ("decided_by", d.decided_by.map(|k| k.as_str())),
        ("reason", d.reason.map(|r| r.as_str())),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            fields.insert(k.to_owned(), string_value(v));
        }
    }
    Struct {
        fields: fields.into_iter().collect(),
    }
}

/// Builds the `CheckResponse` for an answer.
fn to_check_response(
    a: &Answer,
    metadata_of: Option<&Decision>,
    client_identity_headers: &[String],
    drop_key_header: Option<&str>,
) -> CheckResponse {
    let mut resp = CheckResponse::new();
    if a.http_status == 200 {
        let mut ok = OkHttpResponseBuilder::new();
        for (k, v) in &a.upstream_headers {
            ok.add_header(
                *k,
                v.clone(),
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        // Client-sent x-plangate-* headers that plangate does not overwrite are removed.
        for h in client_identity_headers {
            if !a.upstream_headers.iter().any(|(k, _)| k == h) {
                ok.remove_header(h.clone());
            }
        }
        if let Some(h) = drop_key_header {
            ok.remove_header(h);
        }
        for (k, v) in &a.client_headers {
            ok.add_response_header(
                k.clone(),
                v.clone(),
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        resp.set_status(Status::ok(""));
        resp.set_http_response(ok.build());
    } else {
        let mut denied = DeniedHttpResponseBuilder::new();
        denied.set_http_status(match a.http_status {
            400 => HttpStatusCode::BadRequest,
            429 => HttpStatusCode::TooManyRequests,
            503 => HttpStatusCode::ServiceUnavailable,
            _ => HttpStatusCode::Forbidden,
        });
        for (k, v) in &a.client_headers {
            denied.add_header(
                k.clone(),
                v.clone(),
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        if let Some(b) = a.body {
            denied.set_body(b);
        }
        let status = match a.http_status {
            400 => Status::invalid_argument("bad request"),
            429 => Status::resource_exhausted("rate limited"),
            503 => Status::unavailable("counter store unavailable"),
            _ => Status::permission_denied("forbidden"),
        };
        resp.set_status(status);
        resp.set_http_response(denied.build());
    }
    if let Some(d) = metadata_of {
        resp.set_dynamic_metadata(Some(metadata(d)));
    }
    resp
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let req = request.into_inner();
        let bad = |why: &str| {
            tracing::warn!(
                problem = why,
                "ext_authz: unreadable request, answering 400"
            );
            Ok(Response::new(to_check_response(
                &Answer::bad_request(),
                None,
                &[],
                None,
            )))
        };
        let Some(attrs) = req.attributes.as_ref() else {
            return bad("no attributes");
        };
        let Some(http) = attrs.request.as_ref().and_then(|r| r.http.as_ref()) else {
            return bad("no HTTP request in attributes");
        };
        let method = if http.method.is_empty() {
            header(http, ":method").unwrap_or("")
        } else {
            http.method.as_str()
        };
        let raw_path = if http.path.is_empty() {
            header(http, ":path").unwrap_or("")
        } else {
            http.path.as_str()
        };
        // Envoy sends the path with its query string.
        let path = raw_path.split_once('?').map_or(raw_path, |(p, _)| p);
        if method.is_empty() || !path.starts_with('/') {
            return bad("empty method or path");
        }
        let snap = self.engine.snapshot();
        let (key, key_header) = match &snap.key_source {
            KeySource::Header(h) => (header(http, h), Some(h.as_str())),
            KeySource::Metadata { namespace, path } => (
                attrs
                    .metadata_context
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get(namespace))
                    .and_then(|s| metadata_key(s, path)),
                None,
            ),
        };
        // An over-long value cannot be a key; don't hash 64 KiB per request.
        let key = key.map(|k| if k.len() > MAX_KEY_LEN { "" } else { k });
        let ext = &attrs.context_extensions;
        // `hits` (optional): units to charge; "0" checks without charging, for deployments where
        // the ratelimit filter charges (envoy/both.yaml).
        let hits = match ext.get("hits").map(|h| h.parse::<u64>()) {
            None => 1,
            Some(Ok(h)) => h,
            Some(Err(_)) => return bad("context extension `hits` is not a whole number"),
        };
        let er = engine::Request {
            api: ext.get("api").map(String::as_str),
            stage: ext.get("stage").map(String::as_str),
            method,
            path,
            key,
            hits,
        };
        let now = self.engine.clock().now();
        let decision = super::decide(
            &self.engine,
            &self.metrics,
            Service::ExtAuthz,
            &snap,
            &er,
            now,
        )
        .await;
        let a = answer::answer(&decision, snap.rate_limit_headers);
        // Client-sent identity headers, from whichever encoding Envoy used (names arrive
        // lower-case in both).
        let raw_names = http
            .header_map
            .iter()
            .flat_map(|m| m.headers.iter().map(|h| &h.key));
        let client_identity: Vec<String> = http
            .headers
            .keys()
            .chain(raw_names)
            .filter(|k| k.starts_with(IDENTITY_PREFIX))
            .cloned()
            .collect();
        let drop_key = if snap.forward_api_key {
            None
        } else {
            key_header
        };
        let meta = snap.dynamic_metadata.then_some(&decision);
        Ok(Response::new(to_check_response(
            &a,
            meta,
            &client_identity,
            drop_key,
        )))
    }
}

//! Envoy ext_authz: `envoy.service.auth.v3.Authorization/Check`.
//!
//! Envoy quirks handled here: `attributes.request.http.path` includes the query string (cut off
//! before matching); header names arrive lower-case, repeated headers joined with `,`; with
//! `encode_raw_headers` the headers come in `header_map` instead of `headers`. A `CheckResponse`
//! whose status is not OK is a denial, and its `denied_response` is what the client sees.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tonic::{Request, Response, Status};

use super::answer::{self, IDENTITY_PREFIX};
use super::record;
use crate::engine::{self, Decision, Engine, KeyLookup};
use crate::metrics::{Metrics, Service};
use crate::snapshot::{KeySource, Snapshot};

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
fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
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

/// Reads the API key of a Check request from any key source.
#[derive(Debug)]
struct Keys<'a> {
    attrs: &'a envoy_types::pb::envoy::service::auth::v3::AttributeContext,
    http: &'a envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
}

impl KeyLookup for Keys<'_> {
    fn key(&self, source: &KeySource) -> Option<&str> {
        match source {
            KeySource::Header(h) => header(self.http, h),
            KeySource::Metadata { namespace, path } => self
                .attrs
                .metadata_context
                .as_ref()
                .and_then(|m| m.filter_metadata.get(namespace))
                .and_then(|s| metadata_key(s, path)),
        }
    }
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
            Ok(Response::new(answer::check_bad_request()))
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
        if method.is_empty() || !raw_path.starts_with('/') {
            return bad("empty method or path");
        }
        let snap = self.engine.snapshot();
        let keys = Keys { attrs, http };
        let key = keys.key(&snap.key_source);
        let ext = &attrs.context_extensions;
        // `hits` (optional): units to charge; "0" checks without charging, for deployments where
        // the ratelimit filter charges (envoy/both.yaml).
        let hits = match ext.get("hits").map(|h| h.parse::<u64>()) {
            None => 1,
            Some(Ok(h)) => h,
            Some(Err(_)) => return bad("context extension `hits` is not a whole number"),
        };
        // Envoy sends the path with its query string; the constructor cuts it off. Without
        // `api`/`stage` context extensions (Istio cannot set them), the host decides.
        // Envoy sets `host` from `:authority` (HTTP/1 `Host`).
        let host = if http.host.is_empty() {
            header(http, ":authority").or_else(|| header(http, "host"))
        } else {
            Some(http.host.as_str())
        };
        let er = engine::Request::new(method, raw_path, key, hits)
            .stage(
                ext.get("api").map(String::as_str),
                ext.get("stage").map(String::as_str),
            )
            .host(host)
            // The workload's identity as Envoy knows it from its own certificate (a SPIFFE id
            // under Istio mTLS): for `workloads`, ahead of the client-chosen host.
            .principal(attrs.destination.as_ref().map(|d| d.principal.as_str()))
            .key_lookup(&keys);
        let now = self.engine.clock().now();
        // Envoy's request id, for the log: the `x-request-id` header it sets, else its stream id.
        let request_id = header(http, "x-request-id")
            .or_else(|| (!http.id.is_empty()).then_some(http.id.as_str()));
        let decision = record::decide(
            &self.engine,
            &self.metrics,
            Service::ExtAuthz,
            &snap,
            &er,
            now,
            record::Caller {
                request_id,
                traceparent: header(http, "traceparent"),
            },
        )
        .await;
        Ok(Response::new(answer_for(http, &decision, &snap)))
    }
}

/// The answer to Envoy for `decision` on `http`: client-sent identity headers removed, the key
/// header forwarded or not as configured.
fn answer_for(http: &HttpRequest, decision: &Decision, snap: &Snapshot) -> CheckResponse {
    // Client-sent identity headers, from whichever encoding Envoy used (names arrive
    // lower-case in both).
    let raw_names = http
        .header_map
        .iter()
        .flat_map(|m| m.headers.iter().map(|h| &h.key));
    let client_identity: Vec<&str> = http
        .headers
        .keys()
        .chain(raw_names)
        .filter(|k| k.starts_with(IDENTITY_PREFIX))
        .map(String::as_str)
        .collect();
    // The header the key was read from (the API's own source, else the config's).
    let source = decision
        .api
        .as_deref()
        .and_then(|a| snap.apis.get(a))
        .and_then(|a| a.key_source.as_ref())
        .unwrap_or(&snap.key_source);
    let key_header = match source {
        KeySource::Header(h) => Some(h.as_str()),
        KeySource::Metadata { .. } => None,
    };
    answer::check_response(decision, snap, &client_identity, key_header)
}

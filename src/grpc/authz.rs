//! Envoy ext_authz: `envoy.service.auth.v3.Authorization/Check`.
//!
//! Envoy quirks handled here: `attributes.request.http.path` includes the query string (cut off
//! before matching); header names arrive lower-case, repeated headers joined with `,`; with
//! `encode_raw_headers` the headers come in `header_map` instead of `headers`. A `CheckResponse`
//! whose status is not OK is a denial, and its `denied_response` is what the client sees.
//!
//! The request is read in place from the bytes received ([`CheckView`]): the handful of fields
//! plangate reads, each header looked up where it lies, nothing else decoded (fields plangate
//! does not read are not checked either). A request in a form the reader leaves to prost — a
//! singular field given twice, a group — is decoded by prost and read again from prost's own
//! encoding, so that every request means what it means to prost; one prost cannot decode is
//! refused as tonic refuses it (INTERNAL).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message as _;
use smallvec::SmallVec;
use tonic::{Request, Response, Status};

use super::answer::{CheckWire, IDENTITY_PREFIX};
use super::record;
use super::serve::{Encoded, Handler};
use super::wire::{Unread, fields, map_entry, once};
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

/// A Check request's fields as plangate reads them, in place.
#[derive(Debug)]
struct CheckView<'a> {
    /// The context extensions plangate reads: `api`, `stage`, `hits`.
    api: Option<&'a str>,
    stage: Option<&'a str>,
    hits: Option<&'a str>,
    /// The request's headers, read once: `http.headers` (a map: the last of a name wins), then
    /// `http.header_map` (Envoy's raw encoding: the first of a name wins).
    headers: Vec<(&'a str, &'a str)>,
    /// How many of `headers` come from `http.headers`.
    mapped: usize,
    id: &'a str,
    method: &'a str,
    path: &'a str,
    host: &'a str,
    /// `attributes.destination.principal`, when a destination is given.
    principal: Option<&'a str>,
    /// `attributes.metadata_context`, decoded (by prost) only when sent.
    metadata: Option<Metadata>,
}

/// What a Check request is to plangate: readable, or a request to answer 400.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // on the stack, once per call: a box would be an allocation
enum Read<'a> {
    View(CheckView<'a>),
    Bad(&'static str),
}

/// A singular `string` field, given once.
fn set_str<'a>(slot: &mut Option<&'a str>, v: super::wire::Value<'a>) -> Result<(), Unread> {
    once(slot, v.str()?)
}

/// A `HeaderValue`: its key, and its value — or its raw value when the value is empty and the
/// raw value is UTF-8 (`raw_value` is `bytes`: not refused when it is not).
fn header_value(hv: &[u8]) -> Result<(&str, &str), Unread> {
    let (mut k, mut v, mut raw): (&str, &str, &[u8]) = ("", "", &[]);
    for f in fields(hv) {
        match f? {
            (1, x) => k = x.str()?,
            (2, x) => v = x.str()?,
            (3, x) => raw = x.bytes()?,
            _ => {}
        }
    }
    if v.is_empty() {
        v = std::str::from_utf8(raw).unwrap_or("");
    }
    Ok((k, v))
}

/// Room for the headers Envoy usually sends, in one allocation.
const HEADERS: usize = 24;

/// An `HttpRequest`: its headers (both encodings, see [`CheckView::headers`]) and how many of
/// them come from the map; `id`, `method`, `path`, `host`.
type Http<'a> = (Vec<(&'a str, &'a str)>, usize, [&'a str; 4]);

fn read_http(http: &[u8]) -> Result<Http<'_>, Unread> {
    let (mut id, mut method, mut path, mut host) = (None, None, None, None);
    let mut headers = Vec::with_capacity(HEADERS);
    let mut header_map = None;
    for f in fields(http) {
        match f? {
            (1, v) => set_str(&mut id, v)?,
            (2, v) => set_str(&mut method, v)?,
            (3, v) => headers.push(map_entry(v.bytes()?)?),
            (4, v) => set_str(&mut path, v)?,
            (5, v) => set_str(&mut host, v)?,
            (13, v) => once(&mut header_map, v.bytes()?)?,
            _ => {}
        }
    }
    let mapped = headers.len();
    for f in fields(header_map.unwrap_or_default()) {
        if let (1, hv) = f? {
            headers.push(header_value(hv.bytes()?)?);
        }
    }
    Ok((
        headers,
        mapped,
        [id, method, path, host].map(|v: Option<&str>| v.unwrap_or("")),
    ))
}

/// Reads `bytes` as a `CheckRequest`, or `Unread` for a form left to prost.
fn read(bytes: &[u8]) -> Result<Read<'_>, Unread> {
    let mut attributes = None;
    for f in fields(bytes) {
        if let (1, v) = f? {
            once(&mut attributes, v.bytes()?)?;
        }
    }
    let Some(attributes) = attributes else {
        return Ok(Read::Bad("no attributes"));
    };
    let (mut request, mut destination, mut metadata) = (None, None, None);
    // A map: the last entry of a key wins.
    let (mut api, mut stage, mut hits) = (None, None, None);
    for f in fields(attributes) {
        match f? {
            (2, v) => once(&mut destination, v.bytes()?)?,
            (4, v) => once(&mut request, v.bytes()?)?,
            (10, v) => match map_entry(v.bytes()?)? {
                ("api", v) => api = Some(v),
                ("stage", v) => stage = Some(v),
                ("hits", v) => hits = Some(v),
                _ => {}
            },
            (11, v) => once(&mut metadata, v.bytes()?)?,
            _ => {}
        }
    }
    let mut http = None;
    for f in fields(request.unwrap_or_default()) {
        if let (2, v) = f? {
            once(&mut http, v.bytes()?)?;
        }
    }
    let Some(http) = http else {
        return Ok(Read::Bad("no HTTP request in attributes"));
    };
    let principal = match destination {
        None => None,
        Some(peer) => {
            let mut principal = None;
            for f in fields(peer) {
                if let (4, v) = f? {
                    set_str(&mut principal, v)?;
                }
            }
            Some(principal.unwrap_or(""))
        }
    };
    let metadata = match metadata {
        Some(m) if !m.is_empty() => Some(Metadata::decode(m).map_err(|_| Unread)?),
        _ => None,
    };
    let (headers, mapped, [id, method, path, host]) = read_http(http)?;
    Ok(Read::View(CheckView {
        api,
        stage,
        hits,
        headers,
        mapped,
        id,
        method,
        path,
        host,
        principal,
        metadata,
    }))
}

impl<'a> CheckView<'a> {
    /// A header from either encoding Envoy may use.
    fn header(&self, name: &str) -> Option<&'a str> {
        let (mapped, raw) = self.headers.split_at(self.mapped.min(self.headers.len()));
        let named = |(k, _): &&(&str, &str)| *k == name;
        mapped
            .iter()
            .rev()
            .find(named)
            .or_else(|| raw.iter().find(named))
            .map(|(_, v)| *v)
    }

    /// The names of the headers the client sent that start with `x-plangate-`.
    fn identity_headers(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.headers
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.starts_with(IDENTITY_PREFIX))
    }
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

impl KeyLookup for CheckView<'_> {
    fn key(&self, source: &KeySource) -> Option<&str> {
        match source {
            KeySource::Header(h) => self.header(h),
            KeySource::Metadata { namespace, path } => self
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get(namespace))
                .and_then(|s| metadata_key(s, path)),
        }
    }
}

/// The answer to one Check, written when tonic sends it.
#[derive(Debug)]
pub struct CheckAnswer(Option<Decided>);

#[derive(Debug)]
struct Decided {
    decision: Decision,
    snap: Arc<Snapshot>,
    /// The request, for the names of the identity headers its client sent …
    request: Bytes,
    /// … which are here (usually none).
    identity: SmallVec<[Range<usize>; 2]>,
}

/// Where `part` lies in `whole` (a sub-slice of it).
fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

impl CheckAnswer {
    /// The answer as prost's message (what Envoy decodes).
    pub fn to_message(&self) -> CheckResponse {
        self.wire().to_message()
    }

    fn wire(&self) -> CheckWire<'_> {
        let Some(d) = &self.0 else {
            return CheckWire::bad_request();
        };
        let identity = d
            .identity
            .iter()
            .filter_map(|r| std::str::from_utf8(d.request.get(r.clone())?).ok());
        // The header the key was read from (the API's own source, else the config's).
        let source = d
            .decision
            .api
            .as_deref()
            .and_then(|a| d.snap.apis.get(a))
            .and_then(|a| a.key_source.as_ref())
            .unwrap_or(&d.snap.key_source);
        let key_header = match source {
            KeySource::Header(h) => Some(h.as_str()),
            KeySource::Metadata { .. } => None,
        };
        CheckWire::new(&d.decision, &d.snap, identity, key_header)
    }
}

impl Encoded for CheckAnswer {
    fn encode(&self, out: &mut tonic::codec::EncodeBuf<'_>) {
        super::serve::write(out, &self.wire());
    }
}

/// `bytes` in prost's own encoding, when the reader left them to prost.
fn canonical(bytes: &[u8]) -> Result<Bytes, Status> {
    let req = CheckRequest::decode(bytes).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Bytes::from(req.encode_to_vec()))
}

impl AuthzService {
    /// Decides the Check request in `bytes`.
    pub async fn check_bytes(&self, bytes: Bytes) -> Result<CheckAnswer, Status> {
        let recoded;
        let (bytes, read) = match read(&bytes) {
            Ok(r) => (&bytes, r),
            Err(Unread) => {
                recoded = canonical(&bytes)?;
                let r = read(&recoded)
                    .map_err(|_| Status::internal("a request plangate cannot read"))?;
                (&recoded, r)
            }
        };
        let view = match read {
            Read::View(v) => v,
            Read::Bad(why) => return Ok(bad(why)),
        };
        let method = if view.method.is_empty() {
            view.header(":method").unwrap_or("")
        } else {
            view.method
        };
        let raw_path = if view.path.is_empty() {
            view.header(":path").unwrap_or("")
        } else {
            view.path
        };
        if method.is_empty() || !raw_path.starts_with('/') {
            return Ok(bad("empty method or path"));
        }
        let snap = self.engine.snapshot();
        let key = view.key(&snap.key_source);
        // `hits` (optional): units to charge; "0" checks without charging, for deployments where
        // the ratelimit filter charges (envoy/both.yaml).
        let hits = match view.hits.map(|h| h.parse::<u64>()) {
            None => 1,
            Some(Ok(h)) => h,
            Some(Err(_)) => return Ok(bad("context extension `hits` is not a whole number")),
        };
        // Envoy sends the path with its query string; the constructor cuts it off. Without
        // `api`/`stage` context extensions (Istio cannot set them), the host decides.
        // Envoy sets `host` from `:authority` (HTTP/1 `Host`).
        let host = if view.host.is_empty() {
            view.header(":authority").or_else(|| view.header("host"))
        } else {
            Some(view.host)
        };
        let er = engine::Request::new(method, raw_path, key, hits)
            .stage(view.api, view.stage)
            .host(host)
            // The workload's identity as Envoy knows it from its own certificate (a SPIFFE id
            // under Istio mTLS): for `workloads`, ahead of the client-chosen host.
            .principal(view.principal)
            .key_lookup(&view);
        let now = self.engine.clock().now();
        // Envoy's request id, for the log: the `x-request-id` header it sets, else its stream id.
        let request_id = view
            .header("x-request-id")
            .or_else(|| (!view.id.is_empty()).then_some(view.id));
        let decision = record::decide(
            &self.engine,
            &self.metrics,
            Service::ExtAuthz,
            &snap,
            &er,
            now,
            record::Caller {
                request_id,
                traceparent: view.header("traceparent"),
            },
        )
        .await;
        Ok(CheckAnswer(Some(Decided {
            decision,
            identity: view
                .identity_headers()
                .map(|h| range_in(bytes, h.as_bytes()))
                .collect(),
            request: bytes.clone(),
            snap,
        })))
    }
}

/// The answer to a request plangate cannot read, logged.
fn bad(why: &str) -> CheckAnswer {
    tracing::warn!(
        problem = why,
        "ext_authz: unreadable request, answering 400"
    );
    CheckAnswer(None)
}

impl Handler for AuthzService {
    const SERVICE: &'static str = "envoy.service.auth.v3.Authorization";
    const PATH: &'static str = "/envoy.service.auth.v3.Authorization/Check";
    type Answer = CheckAnswer;

    async fn handle(&self, request: Request<Bytes>) -> Result<CheckAnswer, Status> {
        self.check_bytes(request.into_inner()).await
    }
}

/// The typed service (prost messages in and out), for callers in-process: the same answer as
/// on the wire, by the same path.
#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let bytes = Bytes::from(request.into_inner().encode_to_vec());
        let answer = self.check_bytes(bytes).await?;
        Ok(Response::new(answer.to_message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_reads_what_prost_reads() {
        use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
        use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
            HttpRequest, Peer, Request as AttrRequest,
        };
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                destination: Some(Peer {
                    principal: "spiffe://x".into(),
                    ..Default::default()
                }),
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        id: "7".into(),
                        method: "GET".into(),
                        path: "/pets?x=1".into(),
                        host: "h".into(),
                        headers: [("x-api-key".into(), "k".into())].into(),
                        header_map: Some(HeaderMap {
                            headers: vec![
                                HeaderValue {
                                    key: "x-raw".into(),
                                    value: String::new(),
                                    raw_value: b"r".to_vec(),
                                },
                                HeaderValue {
                                    key: "x-plangate-a".into(),
                                    value: "v".into(),
                                    raw_value: Vec::new(),
                                },
                            ],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: [("api".into(), "petstore".into())].into(),
                ..Default::default()
            }),
        };
        let bytes = req.encode_to_vec();
        let Ok(Read::View(v)) = read(&bytes) else {
            panic!("readable")
        };
        assert_eq!(
            (v.id, v.method, v.path, v.host),
            ("7", "GET", "/pets?x=1", "h")
        );
        assert_eq!(v.principal, Some("spiffe://x"));
        assert_eq!(v.header("x-api-key"), Some("k"));
        assert_eq!(v.header("x-raw"), Some("r"));
        assert_eq!(v.header("nope"), None);
        assert_eq!((v.api, v.stage, v.hits), (Some("petstore"), None, None));
        let names: Vec<_> = v.identity_headers().collect();
        assert_eq!(names, ["x-plangate-a"]);

        // A singular message given twice is a merge: left to prost.
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        assert_eq!(read(&twice).map(|_| ()), Err(Unread));
        // The later of two map entries of one key wins, as in prost's map.
        let mut attrs = req.attributes.clone().unwrap().encode_to_vec();
        attrs.extend([0x52, 8, 0x0a, 3, b'a', b'p', b'i', 0x12, 1, b'x']);
        let mut later = vec![0x0a];
        prost::encoding::encode_varint(attrs.len() as u64, &mut later);
        later.extend(&attrs);
        let typed = CheckRequest::decode(later.as_slice()).unwrap();
        assert_eq!(typed.attributes.unwrap().context_extensions["api"], "x");
        let Ok(Read::View(v)) = read(&later) else {
            panic!("readable")
        };
        assert_eq!(v.api, Some("x"));
        assert!(matches!(read(&[]), Ok(Read::Bad("no attributes"))));
        assert!(matches!(read(&[0x0a, 0]), Ok(Read::Bad(_))));
        assert_eq!(read(&[0x0a, 5]).map(|_| ()), Err(Unread));
    }
}

//! Envoy's RateLimitService: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
//!
//! Each descriptor names one request through its entries (`api` and `stage`, or `host` for
//! custom domain names; `api_key`, `method`, `path`; the keys are configurable) and is decided
//! by the same engine as ext_authz, on the same counters. Envoy quirks handled here: request-level `hits_addend` 0 means 1; a descriptor's own
//! `hits_addend` (when present) wins, and 0 there means "check without charging"; `overall_code`
//! must be OK or OVER_LIMIT (Envoy treats UNKNOWN as an error); `:path` includes the query string.
//!
//! As with Check (`grpc::authz`), the request is read in place from the bytes received, and a
//! form the reader leaves to prost is decoded by prost and read again from prost's encoding.

use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use prost::Message as _;
use smallvec::SmallVec;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::answer::RlsWire;
use super::record;
use super::serve::{Encoded, Handler};
use super::wire::{Unread, fields, map_entry, once};
use crate::engine::{self, Decision, Engine};
use crate::metrics::{Metrics, Service};
use crate::snapshot::Snapshot;

/// The RLS service over an engine.
pub struct RlsService {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    max_descriptors: usize,
    max_entries: usize,
}

/// Descriptors one request may carry, and entries one descriptor may carry, unless configured:
/// far above what Envoy sends (one descriptor per `rate_limits` entry of a route, a handful of
/// entries each), far below what a hostile client can pack into a request.
pub const DEFAULT_MAX_DESCRIPTORS: usize = 64;
pub const DEFAULT_MAX_DESCRIPTOR_ENTRIES: usize = 32;

impl RlsService {
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Self {
        RlsService {
            engine,
            metrics,
            max_descriptors: DEFAULT_MAX_DESCRIPTORS,
            max_entries: DEFAULT_MAX_DESCRIPTOR_ENTRIES,
        }
    }

    /// Bounds what one request may carry; beyond them it is refused (INVALID_ARGUMENT) before
    /// any decision.
    pub fn with_limits(mut self, max_descriptors: usize, max_entries: usize) -> Self {
        self.max_descriptors = max_descriptors;
        self.max_entries = max_entries;
        self
    }
}

/// A `RateLimitDescriptor` as plangate reads it, in place.
#[derive(Debug, Clone)]
struct DescriptorView<'a> {
    /// Its entries, read once (room for what Envoy sends without an allocation).
    entries: SmallVec<[(&'a str, &'a str); 8]>,
    /// Its own `hits_addend` (a `UInt64Value`), when given.
    hits: Option<u64>,
    negative_hits: bool,
}

impl<'a> DescriptorView<'a> {
    fn read(message: &'a [u8]) -> Result<Self, Unread> {
        let (mut entries, mut hits, mut negative) = (SmallVec::new(), None, None);
        for f in fields(message) {
            match f? {
                (1, v) => entries.push(map_entry(v.bytes()?)?),
                (3, v) => {
                    let mut value = None;
                    for g in fields(v.bytes()?) {
                        if let (1, x) = g? {
                            once(&mut value, x.varint()?)?;
                        }
                    }
                    once(&mut hits, value.unwrap_or(0))?;
                }
                (4, v) => once(&mut negative, v.varint()? != 0)?,
                _ => {}
            }
        }
        Ok(DescriptorView {
            entries,
            hits,
            negative_hits: negative.unwrap_or(false),
        })
    }

    /// The value of the first entry of `key`.
    fn get(&self, key: &str) -> Option<&'a str> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

/// A `RateLimitRequest` as plangate reads it, in place.
#[derive(Debug)]
struct RlsView<'a> {
    message: &'a [u8],
    domain: &'a str,
    hits_addend: u32,
    descriptors: usize,
    /// The first descriptor (read once: Envoy's configurations send one).
    first: Option<DescriptorView<'a>>,
    /// The entries of the first descriptor that has more than the limit, if one has.
    too_many_entries: Option<usize>,
}

impl<'a> RlsView<'a> {
    fn read(message: &'a [u8], max_entries: usize) -> Result<Self, Unread> {
        let (mut domain, mut hits) = (None, None);
        let (mut descriptors, mut too_many_entries, mut first) = (0, None, None);
        for f in fields(message) {
            match f? {
                (1, v) => once(&mut domain, v.str()?)?,
                (2, v) => {
                    let d = DescriptorView::read(v.bytes()?)?;
                    descriptors += 1;
                    if d.entries.len() > max_entries && too_many_entries.is_none() {
                        too_many_entries = Some(d.entries.len());
                    }
                    if first.is_none() {
                        first = Some(d);
                    }
                }
                // A `uint32`: prost keeps the low 32 bits of the varint.
                (3, v) => once(&mut hits, v.varint()? as u32)?,
                _ => {}
            }
        }
        Ok(RlsView {
            message,
            domain: domain.unwrap_or(""),
            hits_addend: hits.unwrap_or(0),
            descriptors,
            first,
            too_many_entries,
        })
    }

    fn descriptors(&self) -> impl Iterator<Item = DescriptorView<'a>> + use<'a> {
        fields(self.message).filter_map(|f| match f {
            Ok((2, v)) => DescriptorView::read(v.bytes().ok()?).ok(),
            _ => None,
        })
    }
}

/// The engine request a descriptor names.
fn descriptor_request<'a>(
    snap: &Snapshot,
    d: &DescriptorView<'a>,
    request_hits: u64,
) -> engine::Request<'a> {
    // A descriptor's own hits_addend wins; there 0 means check without charging. Negative
    // hits (refunds) are not supported: such a descriptor only checks.
    let hits = match (d.hits, d.negative_hits) {
        (_, true) => 0,
        (Some(h), false) => h,
        (None, false) => request_hits,
    };
    let rls = &snap.rls;
    engine::Request::new(
        d.get(&rls.method).unwrap_or(""),
        d.get(&rls.path).unwrap_or(""),
        d.get(&rls.api_key),
        hits,
    )
    .stage(d.get(&rls.api), d.get(&rls.stage))
    .host(d.get(&rls.host))
}

/// The answer to one ShouldRateLimit, written when tonic sends it.
#[derive(Debug)]
pub struct RlsAnswer(Answered);

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved once per call: a box would be an allocation
enum Answered {
    UnknownDomain(usize),
    Decided {
        decisions: SmallVec<[Decision; 1]>,
        snap: Arc<Snapshot>,
    },
}

impl RlsAnswer {
    /// The answer as prost's message (what Envoy decodes).
    pub fn to_message(&self) -> RateLimitResponse {
        self.wire().to_message()
    }

    fn wire(&self) -> RlsWire<'_> {
        match &self.0 {
            Answered::UnknownDomain(n) => RlsWire::unknown_domain(*n),
            Answered::Decided { decisions, snap } => RlsWire::new(decisions, snap),
        }
    }
}

impl Encoded for RlsAnswer {
    fn encode(&self, out: &mut tonic::codec::EncodeBuf<'_>) {
        super::serve::write(out, &self.wire());
    }
}

impl RlsService {
    /// Decides the ShouldRateLimit request in `bytes`; `metadata` is the call's (Envoy's
    /// request id and trace, when it passes them).
    pub async fn should_rate_limit_bytes(
        &self,
        metadata: &MetadataMap,
        bytes: Bytes,
    ) -> Result<RlsAnswer, Status> {
        let recoded;
        let mut req = match RlsView::read(&bytes, self.max_entries) {
            Ok(r) => r,
            Err(Unread) => {
                let typed = RateLimitRequest::decode(bytes.as_ref())
                    .map_err(|e| Status::internal(e.to_string()))?;
                recoded = typed.encode_to_vec();
                RlsView::read(&recoded, self.max_entries)
                    .map_err(|_| Status::internal("a request plangate cannot read"))?
            }
        };
        let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
        // A request Envoy would never send is refused whole, before any decision or charge.
        if req.descriptors > self.max_descriptors {
            return Err(Status::invalid_argument(format!(
                "{} descriptors; at most {} (--max-descriptors)",
                req.descriptors, self.max_descriptors
            )));
        }
        if let Some(n) = req.too_many_entries {
            return Err(Status::invalid_argument(format!(
                "a descriptor of {n} entries; at most {} (--max-descriptor-entries)",
                self.max_entries
            )));
        }
        let snap = self.engine.snapshot();
        if req.domain != snap.rls.domain {
            self.metrics.rls_unknown_domain();
            tracing::warn!(
                domain = %req.domain,
                expected = %snap.rls.domain,
                "RLS: unknown domain; answering OK without limits"
            );
            return Ok(RlsAnswer(Answered::UnknownDomain(req.descriptors)));
        }
        // Request-level hits_addend: 0 (unset) means 1.
        let request_hits = u64::from(req.hits_addend.max(1));
        let now = self.engine.clock().now();
        let caller = record::Caller {
            // Envoy's request id and the caller's trace, when Envoy passes them in the call's
            // metadata (for the log).
            request_id: text("x-request-id"),
            traceparent: text("traceparent"),
        };
        let request = |desc| descriptor_request(&snap, &desc, request_hits);
        // One descriptor (what Envoy's shipped configurations send) is one decision; several
        // are decided all or nothing, as one Check is.
        let decisions: SmallVec<[Decision; 1]> = if req.descriptors == 1 {
            let one = req.first.take().map(request);
            match one {
                Some(one) => {
                    let d = record::decide(
                        &self.engine,
                        &self.metrics,
                        Service::Rls,
                        &snap,
                        &one,
                        now,
                        caller,
                    )
                    .await;
                    SmallVec::from_buf([d])
                }
                None => SmallVec::new(),
            }
        } else {
            let all: Vec<engine::Request<'_>> = req.descriptors().map(request).collect();
            record::decide_all(
                &self.engine,
                &self.metrics,
                Service::Rls,
                &snap,
                &all,
                now,
                caller,
            )
            .await
            .into()
        };
        Ok(RlsAnswer(Answered::Decided { decisions, snap }))
    }
}

impl Handler for RlsService {
    const SERVICE: &'static str = "envoy.service.ratelimit.v3.RateLimitService";
    const PATH: &'static str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
    type Answer = RlsAnswer;

    async fn handle(&self, request: Request<Bytes>) -> Result<RlsAnswer, Status> {
        let (metadata, _, bytes) = request.into_parts();
        self.should_rate_limit_bytes(&metadata, bytes).await
    }
}

/// The typed service (prost messages in and out), for callers in-process: the same answer as
/// on the wire, by the same path.
#[tonic::async_trait]
impl RateLimitService for RlsService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let bytes = Bytes::from(message.encode_to_vec());
        let answer = self.should_rate_limit_bytes(&metadata, bytes).await?;
        Ok(Response::new(answer.to_message()))
    }
}

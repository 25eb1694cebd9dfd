//! OpenTelemetry traces over OTLP/gRPC (`serve --otlp-endpoint`): one span per decision,
//! `plangate.decision`, with the decision's names as attributes (never a key value), continuing
//! the caller's W3C `traceparent` (the Check request's header; RLS call metadata). Off by
//! default, and free when off: one relaxed check of an empty slot per decision.

use std::sync::OnceLock;

use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

use crate::engine::Decision;

static TRACER: OnceLock<(SdkTracerProvider, opentelemetry_sdk::trace::SdkTracer)> = OnceLock::new();

/// Starts exporting to `endpoint` (`http://collector:4317`). Call inside the Tokio runtime
/// (the gRPC channel lives on it). Spans are batched and sent every 500 ms.
pub fn init(endpoint: &str) -> Result<(), String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(std::time::Duration::from_millis(500))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("plangate")
                .build(),
        )
        .build();
    let tracer = provider.tracer("plangate");
    TRACER
        .set((provider, tracer))
        .map_err(|_| "tracing was started already".to_owned())
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Sends what is buffered and stops (at shutdown).
pub fn shutdown() {
    if let Some((provider, _)) = TRACER.get() {
        let _ = provider.shutdown();
    }
}

/// The parent context of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if valid.
pub fn parent(traceparent: Option<&str>) -> Context {
    let Some(tp) = traceparent else {
        return Context::new();
    };
    let parts: Vec<&str> = tp.trim().split('-').collect();
    let [version, trace, span, flags] = parts.as_slice() else {
        return Context::new();
    };
    if version.len() != 2 || *version == "ff" || trace.len() != 32 || span.len() != 16 {
        return Context::new();
    }
    let (Ok(trace), Ok(span), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(span),
        u8::from_str_radix(flags, 16),
    ) else {
        return Context::new();
    };
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return Context::new();
    }
    Context::new().with_remote_span_context(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// Records the span of one decision, `started` being the wall-clock time it began.
pub fn decision(
    service: &'static str,
    d: &Decision,
    request_id: Option<&str>,
    traceparent: Option<&str>,
    started: std::time::SystemTime,
) {
    let Some((_, tracer)) = TRACER.get() else {
        return;
    };
    let mut attributes = vec![
        KeyValue::new("plangate.grpc_service", service),
        KeyValue::new("plangate.outcome", d.outcome.as_str()),
        KeyValue::new("plangate.shadow", d.shadow),
    ];
    let opt = [
        ("plangate.reason", d.reason.map(|r| r.as_str().to_owned())),
        (
            "plangate.decided_by",
            d.decided_by.map(|k| k.as_str().to_owned()),
        ),
        ("plangate.api", d.api.as_deref().map(str::to_owned)),
        ("plangate.stage", d.stage.as_deref().map(str::to_owned)),
        ("plangate.method", d.method.as_deref().map(str::to_owned)),
        ("plangate.key_id", d.key_id.as_deref().map(str::to_owned)),
        (
            "plangate.usage_plan",
            d.plan_id.as_deref().map(str::to_owned),
        ),
        ("plangate.request_id", request_id.map(str::to_owned)),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            attributes.push(KeyValue::new(k, v));
        }
    }
    let mut span = tracer
        .span_builder("plangate.decision")
        .with_kind(SpanKind::Server)
        .with_start_time(started)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent(traceparent));
    if !d.admitted() && !d.shadow {
        span.set_status(Status::error(d.outcome.as_str()));
    }
    span.end();
}

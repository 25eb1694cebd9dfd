//! Traces over OTLP/gRPC: `plangate serve --otlp-endpoint` sends one `plangate.decision` span per
//! decision to a collector — here an OTLP receiver started by the test (a tonic server on the
//! OpenTelemetry collector proto) — continuing the caller's `traceparent`, with the decision's
//! names as attributes and never a key value.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Plangate, authz_client, check_request, sha};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;

const KEY: &str = "traced-key-0123456789abcdef";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<parking_lot::Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::BoolValue(b)) => Some(b.to_string()),
            _ => None,
        })
}

#[test]
fn each_decision_is_a_span_under_the_callers_trace() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = receiver.clone();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let (dir, config) = common::plans_dir(format!(
        "version: 1\napis: {{ petstore: {{ stages: {{ prod: {{ methods: {{ \"/pets/GET\": {{}} }} }} }} }} }}\ndefaults: {{ api: petstore, stage: prod }}\nusage_plans:\n  gold:\n    quota: {{ limit: 1, period: DAY }}\n    api_stages: [{{ api: petstore, stage: prod }}]\napi_keys:\n  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}\n",
        sha(KEY)
    ));
    let endpoint = format!("http://127.0.0.1:{port}");
    let p = Plangate::start(
        &config,
        &["--otlp-endpoint", &endpoint],
        dir.path().join("p.log"),
    );
    rt.block_on(async {
        let mut c = authz_client(p.grpc).await;
        for _ in 0..2 {
            let mut r = check_request(KEY, "/pets");
            let http = common::http_of(&mut r);
            http.headers.insert(
                "traceparent".into(),
                format!("00-{TRACE_ID}-{PARENT_ID}-01"),
            );
            c.check(r).await.unwrap();
        }
        // A request without a caller's trace starts its own.
        c.check(check_request(KEY, "/pets")).await.unwrap();
    });
    common::wait_until("three spans exported", || receiver.spans.lock().len() >= 3);
    let spans = receiver.spans.lock().clone();
    let traced: Vec<&Span> = spans
        .iter()
        .filter(|s| hex::encode(&s.trace_id) == TRACE_ID)
        .collect();
    assert_eq!(traced.len(), 2, "{spans:?}");
    for s in &traced {
        assert_eq!(s.name, "plangate.decision");
        assert_eq!(hex::encode(&s.parent_span_id), PARENT_ID);
        assert_eq!(attribute(s, "plangate.key_id").as_deref(), Some("k1"));
        assert_eq!(attribute(s, "plangate.usage_plan").as_deref(), Some("gold"));
        assert_eq!(attribute(s, "plangate.api").as_deref(), Some("petstore"));
    }
    let outcomes: Vec<Option<String>> = traced
        .iter()
        .map(|s| attribute(s, "plangate.outcome"))
        .collect();
    assert!(outcomes.contains(&Some("admitted".into())), "{outcomes:?}");
    assert!(
        outcomes.contains(&Some("quota_exceeded".into())),
        "{outcomes:?}"
    );
    let own = spans
        .iter()
        .find(|s| hex::encode(&s.trace_id) != TRACE_ID)
        .expect("a span of its own trace");
    assert!(own.parent_span_id.is_empty());
    // Never a key value.
    let all = format!("{spans:?}");
    assert!(!all.contains(KEY));
    drop(p);
    drop(rt);
    std::thread::sleep(Duration::from_millis(10));
}

//! One decision in the engine: one key, every limit (plan per-method throttle, plan throttle,
//! plan quota, stage method throttle, account throttle) plus the usage counter, memory store —
//! with the API stage named by context extensions, and by a custom domain name (host and base
//! path, as under Istio), in the same run.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use plangate::clock::SystemClock;
use plangate::engine::{Engine, LimitKind, Request};
use plangate::store::MemoryStore;

/// The memory store never waits: its futures are ready on the first poll.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory store does not wait"),
    }
}

const KEY: &str = "bench-key-000000000000";

fn config() -> String {
    format!(
        r#"
version: 1
account:
  throttle: {{ rate: 100000000, burst: 100000000 }}
apis:
  petstore:
    stages:
      prod:
        throttle: {{ rate: 100000000, burst: 100000000 }}
        methods:
          "/pets/GET": {{}}
          "/pets/{{petId}}/GET": {{}}
domain_names:
  api.example.com:
    base_path_mappings:
      - {{ base_path: v1, api: petstore, stage: prod }}
      - {{ base_path: "(none)", api: petstore, stage: prod }}
  "*.tenants.example.net":
    base_path_mappings:
      - {{ api: petstore, stage: prod }}
usage_plans:
  gold:
    throttle: {{ rate: 100000000, burst: 100000000 }}
    quota: {{ limit: 2000000000, period: MONTH }}
    api_stages:
      - api: petstore
        stage: prod
        throttle:
          "/pets/{{petId}}/GET": {{ rate: 100000000, burst: 100000000 }}
api_keys:
  - {{ id: k0, value_sha256: {}, usage_plans: [gold] }}
"#,
        hex::encode(plangate::snapshot::hash_key(KEY))
    )
}

fn decision(c: &mut Criterion) {
    let compiled = plangate::config::load_str(&config(), None, Path::new(".")).unwrap();
    let engine = Engine::new(
        compiled.snapshot,
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
    );
    let req = Request::new("GET", "/pets/42", Some(KEY), 1).stage(Some("petstore"), Some("prod"));
    let d = ready(engine.decide(&req));
    assert!(d.admitted());
    let kinds: Vec<_> = d.limits.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        [
            LimitKind::PlanMethodThrottle,
            LimitKind::PlanThrottle,
            LimitKind::PlanQuota,
            LimitKind::StageMethodThrottle,
            LimitKind::AccountThrottle
        ]
    );
    c.bench_function("engine decision (all limits, memory store)", |b| {
        b.iter(|| ready(engine.decide(std::hint::black_box(&req))))
    });
    // The same decision, the stage found from the host (with a port) and the base path.
    let by_host =
        Request::new("GET", "/v1/pets/42", Some(KEY), 1).host(Some("api.example.com:443"));
    let d = ready(engine.decide(&by_host));
    assert!(d.admitted());
    assert_eq!(d.limits.len(), kinds.len());
    c.bench_function(
        "engine decision via host mapping (all limits, memory store)",
        |b| b.iter(|| ready(engine.decide(std::hint::black_box(&by_host)))),
    );
}

criterion_group!(benches, decision);
criterion_main!(benches);

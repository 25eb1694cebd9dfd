//! The decision engine end to end over the memory store: AWS order, all-or-nothing charging,
//! key checks, quotas, and exactness under concurrency.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plangate::clock::{FakeClock, parse_rfc3339};
use plangate::engine::{Decision, DenyReason, Engine, LimitKind, Outcome, Request};
use plangate::snapshot::hash_key;
use plangate::store::MemoryStore;

const GOLD: &str = "gold-key-0123456789abcdef";
const FREE: &str = "free-key-0123456789abcdef";
const OFF: &str = "off-key-0123456789abcdef";
const DEV: &str = "dev-only-key-0123456789abcdef";

fn config(extra: &str) -> String {
    format!(
        r#"
version: 1
account:
  throttle: {{ rate: 1000, burst: 500 }}
apis:
  petstore:
    stages:
      prod:
        throttle: {{ rate: 100, burst: 50 }}
        unknown_methods: forbid
        methods:
          "/pets/GET": {{ throttle: {{ rate: 20, burst: 30 }} }}
          "/pets/{{petId}}/GET": {{}}
          "/health/GET": {{ api_key_required: false, throttle: {{ rate: 1, burst: 2 }} }}
          "/admin/{{proxy+}}/*": {{ throttle: {{ rate: 0, burst: 0 }} }}
      dev:
        api_key_required: true
usage_plans:
  gold:
    throttle: {{ rate: 10, burst: 8 }}
    quota: {{ limit: 1000, period: MONTH }}
    api_stages:
      - api: petstore
        stage: prod
        throttle:
          "/pets/GET": {{ rate: 5, burst: 4 }}
  free:
    quota: {{ limit: 3, period: DAY }}
    api_stages:
      - {{ api: petstore, stage: prod }}
  devplan:
    api_stages:
      - {{ api: petstore, stage: dev }}
{extra}
api_keys:
  - {{ id: gold-1, value_sha256: {gold}, usage_plans: [gold], customer_id: acme }}
  - {{ id: free-1, value_sha256: {free}, usage_plans: [free] }}
  - {{ id: off-1, value_sha256: {off}, usage_plans: [gold], enabled: false }}
  - {{ id: dev-1, value_sha256: {dev}, usage_plans: [devplan] }}
"#,
        gold = hex::encode(hash_key(GOLD)),
        free = hex::encode(hash_key(FREE)),
        off = hex::encode(hash_key(OFF)),
        dev = hex::encode(hash_key(DEV)),
    )
}

const T0: &str = "2026-11-25T10:00:00Z";

fn engine_with(text: &str) -> (Engine, Arc<FakeClock>) {
    let compiled =
        plangate::config::load_str(text, None, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let clock = Arc::new(FakeClock::new(parse_rfc3339(T0).unwrap()));
    let engine = Engine::new(
        compiled.snapshot,
        Arc::new(MemoryStore::new()),
        clock.clone(),
    );
    (engine, clock)
}

fn engine() -> (Engine, Arc<FakeClock>) {
    engine_with(&config(""))
}

fn req<'a>(key: Option<&'a str>, method: &'a str, path: &'a str) -> Request<'a> {
    Request::new(method, path, key, 1).stage(Some("petstore"), Some("prod"))
}

#[tokio::test]
async fn key_checks_come_first() {
    let (e, _) = engine();
    let cases = [
        (None, DenyReason::MissingKey),
        (Some("not-a-known-key-0123456789"), DenyReason::UnknownKey),
        (Some(OFF), DenyReason::DisabledKey),
        (Some(DEV), DenyReason::KeyNotInPlan),
    ];
    for (key, reason) in cases {
        let d = e.decide(&req(key, "GET", "/pets/1")).await;
        assert_eq!(d.outcome, Outcome::Forbidden, "{key:?}");
        assert_eq!(d.reason, Some(reason), "{key:?}");
        assert!(d.limits.is_empty());
    }
    // The dev key works on its own stage.
    let mut r = req(Some(DEV), "GET", "/anything");
    r.stage = Some("dev");
    let d = e.decide(&r).await;
    assert_eq!(d.outcome, Outcome::Admitted);
    assert_eq!(d.plan_id.as_deref(), Some("devplan"));
}

#[tokio::test]
async fn unknown_api_stage_and_method() {
    let (e, _) = engine();
    let mut r = req(Some(GOLD), "GET", "/pets");
    r.api = Some("bookstore");
    let d = e.decide(&r).await;
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Forbidden, Some(DenyReason::UnknownApi))
    );
    r.api = Some("petstore");
    r.stage = Some("qa");
    let d = e.decide(&r).await;
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Forbidden, Some(DenyReason::UnknownStage))
    );
    // unknown_methods: forbid → Missing Authentication Token, even without a key.
    let d = e.decide(&req(None, "DELETE", "/pets")).await;
    assert_eq!(d.outcome, Outcome::MissingAuthenticationToken);
}

#[tokio::test]
async fn unknown_method_under_allow_uses_stage_defaults() {
    let (e, _) = engine();
    let mut r = req(Some(DEV), "POST", "/whatever/else");
    r.stage = Some("dev");
    let d = e.decide(&r).await;
    assert_eq!(d.outcome, Outcome::Admitted);
    assert_eq!(d.method, None);
    // No stage throttle on dev: only the account throttle applies.
    let kinds: Vec<_> = d.limits.iter().map(|l| l.kind).collect();
    assert_eq!(kinds, vec![LimitKind::AccountThrottle]);
}

#[tokio::test]
async fn limits_are_evaluated_in_aws_order() {
    let (e, _) = engine();
    let d = e.decide(&req(Some(GOLD), "GET", "/pets")).await;
    assert_eq!(d.outcome, Outcome::Admitted);
    let kinds: Vec<_> = d.limits.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        vec![
            LimitKind::PlanMethodThrottle,
            LimitKind::PlanThrottle,
            LimitKind::PlanQuota,
            LimitKind::StageMethodThrottle,
            LimitKind::AccountThrottle,
        ]
    );
    assert_eq!(d.key_id.as_deref(), Some("gold-1"));
    assert_eq!(d.plan_id.as_deref(), Some("gold"));
    assert_eq!(d.customer_id.as_deref(), Some("acme"));
    assert_eq!(d.method.as_deref(), Some("/pets/GET"));
    let remaining: Vec<_> = d.limits.iter().map(|l| l.state.remaining).collect();
    assert_eq!(remaining, vec![3, 7, 999, 29, 499]);
}

#[tokio::test]
async fn first_refusing_limit_names_the_answer() {
    let (e, _) = engine();
    // The plan's per-method bucket (burst 4) refuses first on /pets.
    for _ in 0..4 {
        assert!(e.decide(&req(Some(GOLD), "GET", "/pets")).await.admitted());
    }
    let d = e.decide(&req(Some(GOLD), "GET", "/pets")).await;
    assert_eq!(d.outcome, Outcome::Throttled);
    assert_eq!(d.decided_by, Some(LimitKind::PlanMethodThrottle));
    // 1 token at 5/s: 0.2 s, rounded up to whole seconds.
    assert_eq!(d.retry_after_secs, Some(1));
    // Another method of the plan: the plan bucket (burst 8, 4 used) still admits 4.
    for _ in 0..4 {
        assert!(
            e.decide(&req(Some(GOLD), "GET", "/pets/7"))
                .await
                .admitted()
        );
    }
    let d = e.decide(&req(Some(GOLD), "GET", "/pets/7")).await;
    assert_eq!(d.decided_by, Some(LimitKind::PlanThrottle));
}

#[tokio::test]
async fn a_refused_request_changes_no_counter() {
    let (e, _) = engine();
    for _ in 0..4 {
        e.decide(&req(Some(GOLD), "GET", "/pets")).await;
    }
    let mut probe = req(Some(GOLD), "GET", "/pets");
    probe.hits = 0; // check only
    let before = e.decide(&probe).await;
    assert_eq!(before.outcome, Outcome::Throttled);
    for _ in 0..10 {
        let d = e.decide(&req(Some(GOLD), "GET", "/pets")).await;
        assert_eq!(d.outcome, Outcome::Throttled);
        let now: Vec<_> = d.limits.iter().map(|l| l.state.remaining).collect();
        let then: Vec<_> = before.limits.iter().map(|l| l.state.remaining).collect();
        assert_eq!(now, then, "a refused request consumed something");
    }
    // The quota still shows only the 4 admitted requests.
    let q = before.quota().unwrap();
    assert_eq!(q.state.remaining, 996);
}

#[tokio::test]
async fn keyless_method_skips_plan_limits_but_not_stage_or_account() {
    let (e, _) = engine();
    let d = e.decide(&req(None, "GET", "/health")).await;
    assert_eq!(d.outcome, Outcome::Admitted);
    let kinds: Vec<_> = d.limits.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        vec![LimitKind::StageMethodThrottle, LimitKind::AccountThrottle]
    );
    assert!(e.decide(&req(None, "GET", "/health")).await.admitted());
    let d = e.decide(&req(None, "GET", "/health")).await;
    assert_eq!(d.decided_by, Some(LimitKind::StageMethodThrottle));
    // A key sent to a keyless method is ignored, not charged.
    let d = e.decide(&req(Some(GOLD), "GET", "/health")).await;
    assert_eq!(d.key_id, None);
}

#[tokio::test]
async fn disabled_method_refuses_everything() {
    let (e, _) = engine();
    let d = e.decide(&req(Some(GOLD), "POST", "/admin/users/1")).await;
    assert_eq!(d.outcome, Outcome::Throttled);
    assert_eq!(d.decided_by, Some(LimitKind::StageMethodThrottle));
    assert_eq!(d.retry_after_secs, None, "a disabled method never admits");
}

#[tokio::test]
async fn quota_resets_with_the_calendar() {
    let (e, clock) = engine();
    for _ in 0..3 {
        assert!(
            e.decide(&req(Some(FREE), "GET", "/pets/1"))
                .await
                .admitted()
        );
    }
    let d = e.decide(&req(Some(FREE), "GET", "/pets/1")).await;
    assert_eq!(d.outcome, Outcome::QuotaExceeded);
    assert_eq!(d.decided_by, Some(LimitKind::PlanQuota));
    // 10:00 → midnight: 14 hours.
    assert_eq!(d.retry_after_secs, Some(14 * 3600));
    clock.set(parse_rfc3339("2026-11-25T23:59:59Z").unwrap());
    assert!(
        !e.decide(&req(Some(FREE), "GET", "/pets/1"))
            .await
            .admitted()
    );
    clock.set(parse_rfc3339("2026-11-26T00:00:00Z").unwrap());
    assert!(
        e.decide(&req(Some(FREE), "GET", "/pets/1"))
            .await
            .admitted()
    );
}

#[tokio::test]
async fn hits_charge_several_units_at_once() {
    let (e, _) = engine();
    let mut r = req(Some(FREE), "GET", "/pets/1");
    r.hits = 2;
    let d = e.decide(&r).await;
    assert!(d.admitted());
    assert_eq!(d.quota().unwrap().state.remaining, 1);
    // 2 more do not fit in 1: refused, nothing charged; 1 still fits.
    assert_eq!(e.decide(&r).await.outcome, Outcome::QuotaExceeded);
    r.hits = 1;
    assert!(e.decide(&r).await.admitted());
}

#[tokio::test]
async fn quota_offset_applies_in_the_first_period() {
    let extra = r#"
  offset_plan:
    quota: { limit: 10, period: WEEK, offset: 7, starts_at: 2026-11-24 }
    api_stages:
      - { api: petstore, stage: dev }
"#;
    let text = config(extra).replace("[devplan]", "[offset_plan]");
    let (e, clock) = engine_with(&text);
    let mut r = req(Some(DEV), "GET", "/x");
    r.stage = Some("dev");
    let mut n = 0;
    while e.decide(&r).await.admitted() {
        n += 1;
    }
    assert_eq!(n, 3, "10 - 7 in the week of starts_at");
    clock.set(parse_rfc3339("2026-11-30T00:00:00Z").unwrap());
    let mut n = 0;
    while e.decide(&r).await.admitted() {
        n += 1;
    }
    assert_eq!(n, 10, "the whole limit in the next week");
}

#[tokio::test]
async fn fractional_rate_refills_over_time() {
    let text = config("").replace("rate: 10, burst: 8", "rate: 0.5, burst: 1");
    let (e, clock) = engine_with(&text);
    let r = req(Some(GOLD), "GET", "/pets/1");
    assert!(e.decide(&r).await.admitted());
    let d = e.decide(&r).await;
    assert_eq!(d.decided_by, Some(LimitKind::PlanThrottle));
    assert_eq!(d.retry_after_secs, Some(2));
    clock.advance(Duration::from_millis(1999));
    assert!(!e.decide(&r).await.admitted());
    clock.advance(Duration::from_millis(1));
    assert!(e.decide(&r).await.admitted());
}

/// 8 tasks × 10,000 attempts on the gold key; every refusal must satisfy `refusal`. Returns how
/// many were admitted.
async fn hammer(e: Engine, refusal: fn(&Decision) -> bool) -> u64 {
    let e = Arc::new(e);
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let e = e.clone();
        let admitted = admitted.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                let d = e.decide(&req(Some(GOLD), "GET", "/pets/1")).await;
                if d.admitted() {
                    admitted.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert!(refusal(&d), "unexpected refusal {d:?}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    admitted.load(Ordering::Relaxed)
}

/// 8 tasks × 10,000 attempts on one key with a quota of 1,000: exactly 1,000 admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_quota_is_exact() {
    let text = config("")
        .replace("rate: 10, burst: 8", "rate: 1000000, burst: 1000000")
        .replace("rate: 1000, burst: 500", "rate: 1000000, burst: 1000000")
        .replace("rate: 100, burst: 50", "rate: 1000000, burst: 1000000");
    let (e, _) = engine_with(&text);
    let admitted = hammer(e, |d| d.outcome == Outcome::QuotaExceeded).await;
    assert_eq!(admitted, 1000);
}

/// With a frozen clock a bucket never refills: exactly `burst` admitted, however many try.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_burst_is_exact() {
    let text = config("").replace("rate: 10, burst: 8", "rate: 50, burst: 777");
    let text = text.replace(
        "limit: 1000, period: MONTH",
        "limit: 1000000, period: MONTH",
    );
    let text = text.replace("rate: 1000, burst: 500", "rate: 1000, burst: 100000");
    let text = text.replace("rate: 100, burst: 50", "rate: 100, burst: 100000");
    let (e, _) = engine_with(&text);
    let admitted = hammer(e, |d| d.decided_by == Some(LimitKind::PlanThrottle)).await;
    assert_eq!(admitted, 777);
}

#[tokio::test]
async fn counters_survive_a_snapshot_swap() {
    let (e, _) = engine();
    for _ in 0..3 {
        e.decide(&req(Some(FREE), "GET", "/pets/1")).await;
    }
    // Raise the free quota from 3 to 5: the 3 used stay used.
    let text = config("").replace("limit: 3, period: DAY", "limit: 5, period: DAY");
    let compiled = plangate::config::load_str(&text, None, Path::new(".")).unwrap();
    e.swap(compiled.snapshot);
    let mut n = 0;
    while e
        .decide(&req(Some(FREE), "GET", "/pets/1"))
        .await
        .admitted()
    {
        n += 1;
    }
    assert_eq!(n, 2);
}

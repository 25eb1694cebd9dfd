//! Where plangate once answered differently from Amazon API Gateway, each case as AWS answers it
//! (issue 14, "divergences"): `ANY`, case-sensitive verbs, one stage-default bucket for all
//! unlisted paths of a verb, fine-grained plan throttles only under a plan throttle.

mod common;

use std::path::Path;
use std::sync::Arc;

use plangate::clock::{FakeClock, parse_rfc3339};
use plangate::engine::{Engine, LimitKind, Outcome, Request};
use plangate::snapshot::hash_key;
use plangate::store::MemoryStore;

const KEY: &str = "fidelity-key-0123456789abcdef";

fn config(stage: &str, plan: &str) -> String {
    format!(
        r#"{head}{stage}
usage_plans:
  gold:
{plan}
    api_stages: [{{ api: petstore, stage: prod }}]
api_keys:
  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}
"#,
        hex::encode(hash_key(KEY)),
        head = common::PETSTORE_PROD,
    )
}

fn engine(text: &str) -> Engine {
    let compiled =
        plangate::config::load_str(text, None, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let clock = Arc::new(FakeClock::new(
        parse_rfc3339("2026-11-26T10:00:00Z").unwrap(),
    ));
    Engine::new(compiled.snapshot, Arc::new(MemoryStore::new()), clock)
}

fn errors(text: &str) -> String {
    match plangate::config::load_str(text, None, Path::new(".")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

async fn outcome(e: &Engine, verb: &str, path: &str) -> Outcome {
    let r = Request::new(verb, path, Some(KEY), 1).stage(Some("petstore"), Some("prod"));
    e.decide(&r).await.outcome
}

#[tokio::test]
async fn any_means_every_verb() {
    for any in ["ANY", "*"] {
        let e = engine(&config(
            &format!(
                "        unknown_methods: forbid\n        methods:\n          \"/{{proxy+}}/{any}\": {{}}"
            ),
            "",
        ));
        for verb in ["GET", "POST", "DELETE", "PATCH"] {
            assert_eq!(
                outcome(&e, verb, "/a/b").await,
                Outcome::Admitted,
                "{verb} under {any}"
            );
        }
    }
    // …every verb AWS supports, that is: DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT.
    let e = engine(&config(
        "        unknown_methods: forbid\n        methods:\n          \"/{proxy+}/ANY\": {}",
        "",
    ));
    for verb in ["HEAD", "OPTIONS", "PUT"] {
        assert_eq!(outcome(&e, verb, "/a").await, Outcome::Admitted, "{verb}");
    }
    for verb in ["TRACE", "CONNECT", "BREW", "get"] {
        assert_eq!(
            outcome(&e, verb, "/a").await,
            Outcome::MissingAuthenticationToken,
            "{verb}"
        );
    }
    // An explicit verb beats ANY on the same resource.
    let e = engine(&config(
        "        methods:\n          \"/pets/ANY\": {}\n          \"/pets/GET\": { throttle: { rate: 1, burst: 1 } }",
        "",
    ));
    let r = Request::new("GET", "/pets", Some(KEY), 1).stage(Some("petstore"), Some("prod"));
    assert_eq!(e.decide(&r).await.method.as_deref(), Some("/pets/GET"));
    let r = Request::new("PUT", "/pets", Some(KEY), 1).stage(Some("petstore"), Some("prod"));
    assert_eq!(e.decide(&r).await.method.as_deref(), Some("/pets/ANY"));
    // Both spellings on one resource name the same method twice.
    let err = errors(&config(
        "        methods:\n          \"/pets/ANY\": {}\n          \"/pets/*\": {}",
        "",
    ));
    assert!(err.contains("`ANY` and `*` both name every verb"), "{err}");
}

#[tokio::test]
async fn verbs_are_case_sensitive() {
    let e = engine(&config(
        "        unknown_methods: forbid\n        methods:\n          \"/pets/GET\": {}",
        "",
    ));
    assert_eq!(outcome(&e, "GET", "/pets").await, Outcome::Admitted);
    assert_eq!(
        outcome(&e, "get", "/pets").await,
        Outcome::MissingAuthenticationToken
    );
    // A lower-case verb in the configuration is refused, with the spellings that work.
    let err = errors(&config("        methods:\n          \"/pets/get\": {}", ""));
    assert!(err.contains("must be upper case"), "{err}");
}

#[tokio::test]
async fn unlisted_paths_share_the_stage_default_bucket_of_their_verb() {
    let e = engine(&config(
        "        throttle: { rate: 0.001, burst: 3 }\n        methods:\n          \"/pets/GET\": {}",
        "",
    ));
    // Each new path once gave a fresh burst; now the verb's bucket is shared.
    let mut admitted = 0;
    for i in 0..10 {
        if outcome(&e, "POST", &format!("/nope/{i}")).await == Outcome::Admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    // Another verb has its own bucket; a listed method its own.
    assert_eq!(outcome(&e, "DELETE", "/nope/1").await, Outcome::Admitted);
    assert_eq!(outcome(&e, "GET", "/pets").await, Outcome::Admitted);
    // Made-up verbs share one bucket, whatever they are called.
    let mut admitted = 0;
    for i in 0..10 {
        if outcome(&e, &format!("X{i}"), "/nope").await == Outcome::Admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    let r = Request::new("POST", "/nope/x", Some(KEY), 1).stage(Some("petstore"), Some("prod"));
    let d = e.decide(&r).await;
    assert_eq!(d.decided_by, Some(LimitKind::StageMethodThrottle));
}

#[test]
fn a_plan_method_throttle_needs_a_plan_throttle() {
    let stage = "        methods:\n          \"/pets/GET\": {}";
    let fine = "    api_stages:\n      - api: petstore\n        stage: prod\n        throttle:\n          \"/pets/GET\": { rate: 1, burst: 1 }\n";
    // The plan's own `api_stages` replaces the one in `config`: written out here.
    let text = |plan_throttle: &str| {
        config(stage, plan_throttle)
            .replace("    api_stages: [{ api: petstore, stage: prod }]\n", fine)
    };
    let err = errors(&text(""));
    assert!(
        err.contains("fine-grained") && err.contains("usage plan throttle"),
        "{err}"
    );
    plangate::config::load_str(
        &text("    throttle: { rate: 10, burst: 10 }"),
        None,
        Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_greedy_proxy_takes_what_no_resource_matches_whole() {
    // AWS: "/parent/{proxy+} can stand for any resource matching the path pattern of
    // /parent/*"; the most specific resource that matches the whole path wins; a sibling
    // resource's subtree is not the proxy's.
    let e = engine(&config(
        "        unknown_methods: forbid\n        methods:\n          \"/parent/GET\": {}\n          \"/parent/{id}/GET\": {}\n          \"/{proxy+}/ANY\": { api_key_required: false }",
        "",
    ));
    let method = |verb: &'static str, path: &'static str| {
        let e = &e;
        async move {
            let r = Request::new(verb, path, Some(KEY), 1).stage(Some("petstore"), Some("prod"));
            e.decide(&r).await.method.map(|m| m.to_string())
        }
    };
    assert_eq!(
        method("GET", "/parent").await.as_deref(),
        Some("/parent/GET")
    );
    assert_eq!(
        method("GET", "/parent/7").await.as_deref(),
        Some("/parent/{id}/GET")
    );
    // Deeper than any explicit resource under `/parent`: AWS leaves `/parent[/*]` out of a
    // sibling `/{proxy+}` ("Set up a method request"), so an unknown method, not the proxy.
    assert_eq!(method("GET", "/parent/7/x").await, None);
    assert_eq!(method("GET", "/parent/7/x/y").await, None);
    // Elsewhere, the proxy.
    assert_eq!(
        method("GET", "/other").await.as_deref(),
        Some("/{proxy+}/ANY")
    );
    // A resource that matches the whole path but lacks the verb does not fall back (AWS:
    // Missing Authentication Token).
    assert_eq!(method("POST", "/parent").await, None);
}

#[tokio::test]
async fn a_throttle_may_give_only_its_rate_or_only_its_burst() {
    // AWS's ThrottleSettings has both fields optional. `rate` alone: a bucket of one second
    // of the rate (here 3); `burst` alone: the whole burst refilled every second.
    for (plan, burst, rate) in [
        ("    throttle: { rate: 2.5 }", 3, 2.5),
        ("    throttle: { burst: 4 }", 4, 4.0),
    ] {
        let e = engine(&config(
            "        methods:\n          \"/pets/GET\": {}",
            plan,
        ));
        let r = Request::new("GET", "/pets", Some(KEY), 1).stage(Some("petstore"), Some("prod"));
        let d = e.decide(&r).await;
        let plan_limit = d
            .limits
            .iter()
            .find(|l| l.kind == LimitKind::PlanThrottle)
            .unwrap_or_else(|| panic!("{plan}: no plan throttle"));
        assert_eq!(
            plan_limit.config,
            plangate::engine::LimitConfig::Throttle { rate, burst },
            "{plan}"
        );
    }
    let err = errors(&config("", "    throttle: {}"));
    assert!(err.contains("needs `rate`, `burst` or both"), "{err}");
}

#[test]
fn gateway_responses_are_checked() {
    for (responses, wanted) in [
        (
            "  SLOW_DOWN: { status: 429 }",
            "`SLOW_DOWN` is not one of THROTTLED",
        ),
        (
            "  THROTTLED: { status: 200 }",
            "200 is not an HTTP error status",
        ),
        (
            "  THROTTLED: { status: 499 }",
            "499 is not an HTTP error status",
        ),
        (
            "  THROTTLED: { headers: { \"x-a\": \"1\\r\\nx-b: 2\" } }",
            "cannot hold line breaks",
        ),
        (
            "  THROTTLED: { headers: { \"x a\": \"1\" } }",
            "is not a header name",
        ),
    ] {
        let text = format!("{}gateway_responses:\n{responses}\n", config("", ""));
        let err = errors(&text);
        assert!(err.contains(wanted), "{responses}: {err}");
    }
}

/// AWS subtracts a quota's `offset` from its limit "in the initial time period". Without
/// `starts_at`, plangate's initial period is the one in which the counter store first saw the
/// plan: recorded once, kept across restarts (persisted memory store) and reloads.
#[tokio::test]
async fn quota_offset_without_starts_at_applies_in_the_first_period_only() {
    use plangate::clock::Nanos;
    use plangate::store::{Store, StoreOptions};
    let text = config(
        "        {}",
        "    quota: { limit: 5, period: DAY, offset: 2 }",
    );
    let data = tempfile::tempdir().unwrap();
    let opts = StoreOptions::Memory {
        data_dir: Some(data.path().to_owned()),
        recover: false,
    };
    let at = |t: &str| parse_rfc3339(t).unwrap();
    // A server (store + snapshot resolved at `now`): how many of 6 calls it admits.
    async fn admitted(store: Arc<dyn Store>, text: &str, now: Nanos) -> usize {
        let mut snapshot = plangate::config::load_str(text, None, Path::new("."))
            .unwrap()
            .snapshot;
        plangate::engine::resolve_initial_periods(&mut snapshot, &*store, now)
            .await
            .unwrap();
        let e = Engine::new(snapshot, store, Arc::new(FakeClock::new(now)));
        let mut n = 0;
        for _ in 0..6 {
            let r =
                Request::new("GET", "/pets", Some(KEY), 1).stage(Some("petstore"), Some("prod"));
            if e.decide(&r).await.admitted() {
                n += 1;
            }
        }
        n
    }
    let day1 = at("2026-11-26T10:00:00Z");
    let store = plangate::store::open(&opts, day1).await.unwrap();
    assert_eq!(
        admitted(store.clone(), &text, day1).await,
        3,
        "5 - 2 in the initial period"
    );
    // A reload on the next day: the initial period stays the first day.
    let day2 = at("2026-11-27T10:00:00Z");
    assert_eq!(admitted(store.clone(), &text, day2).await, 5);
    store.flush().await.unwrap();
    drop(store);
    // A restart on the third day, from the persisted store: still not the initial period.
    let day3 = at("2026-11-28T10:00:00Z");
    let store = plangate::store::open(&opts, day3).await.unwrap();
    assert_eq!(admitted(store.clone(), &text, day3).await, 5);
    // With `starts_at`, the configured day decides (nothing recorded is needed).
    let dated = config(
        "        {}",
        "    quota: { limit: 5, period: DAY, offset: 2, starts_at: 2026-11-28 }",
    );
    let fresh = plangate::store::open(
        &StoreOptions::Memory {
            data_dir: None,
            recover: false,
        },
        day3,
    )
    .await
    .unwrap();
    assert_eq!(admitted(fresh, &dated, day3).await, 3);
}

/// AWS UpdateUsage may set the remaining above the limit: a temporary extension of the current
/// period. The key gets exactly that many; the next period starts from the limit; the extension
/// survives a restart of a persisted store.
#[tokio::test]
async fn update_usage_above_the_limit_extends_the_current_period() {
    use plangate::store::StoreOptions;
    let text = config("        {}", "    quota: { limit: 5, period: DAY }");
    let data = tempfile::tempdir().unwrap();
    let opts = StoreOptions::Memory {
        data_dir: Some(data.path().to_owned()),
        recover: false,
    };
    let day1 = parse_rfc3339("2026-11-26T10:00:00Z").unwrap();
    let engine_at = |store, now| {
        let snapshot = plangate::config::load_str(&text, None, Path::new("."))
            .unwrap()
            .snapshot;
        Engine::new(snapshot, store, Arc::new(FakeClock::new(now)))
    };
    let store = plangate::store::open(&opts, day1).await.unwrap();
    let e = engine_at(store.clone(), day1);
    let now = plangate::usage::update(&e, "gold", "k1", 8, day1)
        .await
        .unwrap();
    assert_eq!((now.limit, now.remaining), (5, 8));
    store.flush().await.unwrap();
    drop((e, store));
    // After a restart, the extension holds: 8 admitted, then refused.
    let store = plangate::store::open(&opts, day1).await.unwrap();
    let e = engine_at(store.clone(), day1);
    assert_eq!(
        plangate::usage::current(&e, "gold", "k1", day1)
            .await
            .unwrap()
            .remaining,
        8
    );
    let r = Request::new("GET", "/pets", Some(KEY), 1).stage(Some("petstore"), Some("prod"));
    let mut admitted = 0;
    for _ in 0..10 {
        if e.decide(&r).await.admitted() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 8);
    // The next day: the limit again.
    let day2 = parse_rfc3339("2026-11-27T10:00:00Z").unwrap();
    let e = engine_at(store, day2);
    assert_eq!(
        plangate::usage::current(&e, "gold", "k1", day2)
            .await
            .unwrap()
            .remaining,
        5
    );
}

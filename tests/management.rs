//! The typed management API (`plangate.v1.Management`) on the admin address of a real
//! `plangate serve`: next to the HTTP admin API on one port, behind the same token; Explain
//! against the decisions Check then makes; the decision tail; config, reload and key listing.

mod common;

use std::time::Duration;

use common::{Plangate, Succeeds, sha};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use plangate::management::pb;
use plangate::management::pb::management_client::ManagementClient;
use tonic::Code;
use tonic::transport::Channel;

const TOKEN: &str = "mgmt-token-0123456789";
const KEY: &str = "mgmt-key-0123456789abcdef";
const OTHER: &str = "mgmt-other-key-0123456789a";

fn config() -> String {
    common::petstore(
        "",
        &[(
            "prod",
            r#"{ methods: { "/pets/GET": { throttle: { rate: 0.01, burst: 100 } } } }"#,
        )],
        &[("gold", "quota: { limit: 3, period: DAY }")],
        &[
            (
                "k1",
                KEY,
                "name: First, usage_plans: [gold], customer_id: acme",
            ),
            ("k2", OTHER, "usage_plans: [gold]"),
            (
                "k3",
                "mgmt-third-key-0123456789a",
                "usage_plans: [gold], enabled: false",
            ),
        ],
    )
}

struct Served {
    p: Plangate,
    dir: tempfile::TempDir,
}

fn serve() -> Served {
    serve_with(&[])
}

fn serve_with(extra: &[&str]) -> Served {
    let (dir, path) = common::plans_dir(config());
    let mut args = vec!["--admin-token", TOKEN];
    args.extend_from_slice(extra);
    let p = Plangate::start(&path, &args, dir.path().join("plangate.log"));
    Served { p, dir }
}

/// Watchers are capped (issue 25, item 9): each costs every decision a copy, and thousands of
/// idle ones starved the data plane. One over the cap is RESOURCE_EXHAUSTED; a watcher that
/// leaves frees its place.
#[tokio::test]
async fn watchers_are_capped_and_a_place_frees_when_one_leaves() {
    let s = serve_with(&["--max-watchers", "2"]);
    let mut m = ManagementClient::new(channel(s.p.admin).await);
    let watch = |m: &mut ManagementClient<Channel>| {
        let mut m = m.clone();
        async move {
            m.watch_decisions(authorized(pb::WatchDecisionsRequest::default()))
                .await
        }
    };
    let first = watch(&mut m).await.unwrap();
    let _second = watch(&mut m).await.unwrap();
    let third = watch(&mut m).await.unwrap_err();
    assert_eq!(third.code(), tonic::Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains("--max-watchers"), "{third:?}");
    drop(first);
    // The first watcher's task notices the stream is gone and releases its place.
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(w) = watch(&mut m).await {
            again = Some(w);
            break;
        }
    }
    assert!(
        again.is_some(),
        "the place of a watcher that left was not freed"
    );
    // Checks are answered meanwhile.
    let mut authz = AuthorizationClient::new(channel(s.p.grpc).await);
    authz.check(check_request(KEY)).await.unwrap();
}

async fn channel(port: u16) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn authorized<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

fn explain_request(key: &str) -> pb::ExplainRequest {
    pb::ExplainRequest {
        api: "petstore".into(),
        stage: "prod".into(),
        method: "GET".into(),
        path: "/pets?x=1".into(),
        api_key: key.into(),
        ..Default::default()
    }
}

fn check_request(key: &str) -> CheckRequest {
    common::check_request_to(key, "/pets", "petstore", "prod")
}

#[tokio::test]
async fn without_the_token_every_call_is_unauthenticated() {
    let s = serve();
    let mut c = ManagementClient::new(channel(s.p.admin).await);
    let codes = [
        c.explain(explain_request(KEY))
            .await
            .err()
            .map(|e| e.code()),
        c.get_usage(pb::GetUsageRequest::default())
            .await
            .err()
            .map(|e| e.code()),
        c.update_usage(pb::UpdateUsageRequest::default())
            .await
            .err()
            .map(|e| e.code()),
        c.list_api_keys(pb::ListApiKeysRequest::default())
            .await
            .err()
            .map(|e| e.code()),
        c.get_config(pb::GetConfigRequest {})
            .await
            .err()
            .map(|e| e.code()),
        c.reload(pb::ReloadRequest {}).await.err().map(|e| e.code()),
        c.watch_decisions(pb::WatchDecisionsRequest::default())
            .await
            .err()
            .map(|e| e.code()),
    ];
    assert!(
        codes.iter().all(|c| *c == Some(Code::Unauthenticated)),
        "{codes:?}"
    );
    // A wrong token too.
    let mut wrong = tonic::Request::new(pb::GetConfigRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        c.get_config(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // With it, they work.
    let cfg = c
        .get_config(authorized(pb::GetConfigRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((cfg.generation, cfg.api_keys, cfg.usage_plans), (1, 3, 1));
    assert_eq!(cfg.source_fingerprint.len(), 64);
    assert!(cfg.redacted_json.contains("\"k1\""));
    assert!(!cfg.redacted_json.contains(KEY) && !cfg.redacted_json.contains(&sha(KEY)));
    // The HTTP admin API shares the port.
    assert_eq!(common::http(s.p.admin, "GET", "/healthz", &[]).status, 200);
    assert_eq!(
        common::http(s.p.admin, "GET", "/v1/config", &[]).status,
        401
    );
}

#[tokio::test]
async fn explain_answers_what_check_then_decides() {
    let s = serve();
    let mut m = ManagementClient::new(channel(s.p.admin).await);
    let mut authz = AuthorizationClient::new(channel(s.p.grpc).await);
    // Quota 3 a day: three admissions, then quota refusals. Interleave.
    for step in 0..5 {
        let e = m
            .explain(authorized(explain_request(KEY)))
            .await
            .unwrap()
            .into_inner();
        let r = authz.check(check_request(KEY)).await.unwrap().into_inner();
        let checked = match r.status.map(|s| s.code) {
            Some(0) => pb::Outcome::Admitted,
            Some(8) => pb::Outcome::QuotaExceeded,
            other => panic!("step {step}: {other:?}"),
        };
        assert_eq!(e.outcome, checked as i32, "step {step}: {e:#?}");
        if step < 3 {
            // What the request would leave, as Check's answer says it; and Explain charged
            // nothing (the count moves by Check's charges alone).
            let quota = e.limits.iter().find(|l| l.limit == "plan_quota").unwrap();
            assert_eq!(quota.remaining, 2 - step, "Explain charged nothing");
        } else {
            assert_eq!(e.decided_by, "plan_quota");
            assert_eq!(e.outcome_name, "quota_exceeded");
        }
    }
    // Explain for 2 units on a fresh key: what a charge of 2 would meet, and no charge.
    let mut two = explain_request(OTHER);
    two.hits = 2;
    for _ in 0..3 {
        let e = m
            .explain(authorized(two.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(e.outcome, pb::Outcome::Admitted as i32);
        assert_eq!(e.api_key_id, "k2");
    }
    let mut four = explain_request(OTHER);
    four.hits = 4;
    let e = m.explain(authorized(four)).await.unwrap().into_inner();
    assert_eq!(
        (e.outcome, e.decided_by.as_str()),
        (pb::Outcome::QuotaExceeded as i32, "plan_quota")
    );
    // Identity refusals and bad requests.
    let e = m
        .explain(authorized(explain_request("no-such-key-0123456789ab")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (e.outcome, e.reason.as_str()),
        (pb::Outcome::Forbidden as i32, "unknown_key")
    );
    let mut bad = explain_request(KEY);
    bad.path = "pets".into();
    assert_eq!(
        m.explain(authorized(bad)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    drop(s.dir);
}

#[tokio::test]
async fn watch_tails_decisions_and_counts_what_it_drops() {
    let s = serve();
    let mut m = ManagementClient::new(channel(s.p.admin).await);
    let mut authz = AuthorizationClient::new(channel(s.p.grpc).await);
    let mut all = m
        .watch_decisions(authorized(pb::WatchDecisionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut refused = m
        .watch_decisions(authorized(pb::WatchDecisionsRequest {
            outcome: pb::Outcome::Forbidden as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    // Give the watchers' tasks a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(200)).await;
    authz.check(check_request(KEY)).await.unwrap();
    authz
        .check(check_request("unknown-key-0123456789abc"))
        .await
        .unwrap();
    let first = all.message().await.unwrap().unwrap();
    assert_eq!(
        (first.api_key_id.as_str(), first.outcome),
        ("k1", pb::Outcome::Admitted as i32)
    );
    assert_eq!(
        (first.service.as_str(), first.stage.as_str()),
        ("ext_authz", "prod")
    );
    let second = all.message().await.unwrap().unwrap();
    assert_eq!(
        (second.outcome, second.reason.as_str()),
        (pb::Outcome::Forbidden as i32, "unknown_key")
    );
    let only = refused.message().await.unwrap().unwrap();
    assert_eq!(only.reason, "unknown_key", "the filter keeps refusals only");
}

/// A watcher that does not read: decisions go on at full speed, and its next events say what it
/// lost. In process, on the service itself, so that no HTTP/2 buffering hides the drops.
#[tokio::test]
async fn a_slow_watcher_loses_events_and_never_blocks_decisions() {
    use std::sync::Arc;

    use envoy_types::ext_authz::v3::pb::Authorization;
    use plangate::management::pb::management_server::Management;
    use tokio_stream::StreamExt;

    let c = plangate::config::load_str(&config(), None, std::path::Path::new(".")).unwrap();
    let engine = Arc::new(plangate::engine::Engine::new(
        c.snapshot,
        Arc::new(plangate::store::MemoryStore::new()),
        Arc::new(plangate::clock::SystemClock),
    ));
    let metrics = Arc::new(plangate::metrics::Metrics::new());
    let m = plangate::management::ManagementService::new(engine.clone(), metrics.clone(), None);
    let authz = plangate::grpc::AuthzService::new(engine, metrics);
    let mut slow = m
        .watch_decisions(tonic::Request::new(pb::WatchDecisionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let n = 20_000u64;
    for _ in 0..n {
        authz
            .check(tonic::Request::new(check_request(OTHER)))
            .await
            .unwrap();
    }
    let (mut got, mut dropped) = (0u64, 0u64);
    while got + dropped < n {
        let e = tokio::time::timeout(Duration::from_secs(5), slow.next())
            .await
            .expect("the stream goes on")
            .unwrap()
            .unwrap();
        got += 1;
        dropped += e.dropped;
    }
    // Every decision was seen or counted as lost; what was kept is bounded by the tap's ring
    // (4096) and the watcher's buffer (256).
    assert_eq!(got + dropped, n);
    assert!(
        dropped > 0,
        "{n} unread decisions overflow a watcher's buffers"
    );
    assert!(got <= 4096 + 256, "kept {got}");
}

#[tokio::test]
async fn config_reload_and_keys() {
    let s = serve();
    let mut m = ManagementClient::new(channel(s.p.admin).await);
    // A reload of unchanged files swaps nothing and keeps the generation (as POST /v1/reload).
    let r = m
        .reload(authorized(pb::ReloadRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.result, r.generation),
        (pb::reload_response::Result::Unchanged as i32, 1)
    );
    std::fs::write(
        s.dir.path().join("plans.yaml"),
        "version: 1\nusage_plans:\n  gold:\n    quota: { limit: -1, period: DAY }\n",
    )
    .unwrap();
    let r = m
        .reload(authorized(pb::ReloadRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.result, pb::reload_response::Result::Rejected as i32);
    let e = &r.errors[0];
    assert_eq!((e.line, e.column), (4, 14), "{e:?}");
    assert!(
        e.file.ends_with("plans.yaml") && e.message.contains("quota limit"),
        "{e:?}"
    );
    assert_eq!(e.path, "usage_plans.gold.quota.limit");
    // Keys, a page at a time.
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = m
            .list_api_keys(authorized(pb::ListApiKeysRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.api_keys.len() <= 2);
        ids.extend(page.api_keys.iter().map(|k| (k.id.clone(), k.enabled)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        ids,
        [
            ("k1".to_owned(), true),
            ("k2".to_owned(), true),
            ("k3".to_owned(), false)
        ]
    );
    let bad = m
        .list_api_keys(authorized(pb::ListApiKeysRequest {
            page_size: 1,
            page_token: "zz".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn usage_is_typed_and_paged() {
    let s = serve();
    let mut m = ManagementClient::new(channel(s.p.admin).await);
    let mut authz = AuthorizationClient::new(channel(s.p.grpc).await);
    authz.check(check_request(KEY)).await.unwrap();
    authz.check(check_request(OTHER)).await.unwrap();
    authz.check(check_request(OTHER)).await.unwrap();
    let today = chrono::DateTime::from_timestamp_nanos(plangate::clock::Clock::now(
        &plangate::clock::SystemClock,
    ))
    .date_naive()
    .to_string();
    let ask = |token: String| pb::GetUsageRequest {
        usage_plan_id: "gold".into(),
        start_date: today.clone(),
        end_date: today.clone(),
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    let p1 = m
        .get_usage(authorized(ask(String::new())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.items.len(), 1);
    assert_eq!(p1.items["k1"].days[0].used, 1);
    assert_eq!(p1.items["k1"].days[0].remaining, Some(2));
    let p2 = m
        .get_usage(authorized(ask(p1.next_page_token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.items["k2"].days[0].used, 2);
    assert!(p2.next_page_token.is_empty());
    // UpdateUsage, then the report shows it (as the HTTP API does).
    let u = m
        .update_usage(authorized(pb::UpdateUsageRequest {
            usage_plan_id: "gold".into(),
            key_id: "k2".into(),
            remaining: 3,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (u.limit, u.used, u.remaining, u.period.as_str()),
        (3, 0, 3, "DAY")
    );
    let missing = m
        .update_usage(authorized(pb::UpdateUsageRequest {
            usage_plan_id: "gold".into(),
            key_id: "nobody".into(),
            remaining: 1,
        }))
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
}

#[test]
fn the_explain_command_prints_what_check_prints() {
    let s = serve();
    let run = |cmd: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
            .args(cmd)
            .args([
                "--api", "petstore", "--stage", "prod", "--path", "/pets", "--key", OTHER,
            ])
            .args(["--at", "2026-11-26T12:00:00Z"])
            .env("PLANGATE_ADMIN_TOKEN", TOKEN)
            .succeeds();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let admin = format!("http://127.0.0.1:{}", s.p.admin);
    let explained = run(&["explain", "--admin", &admin]);
    let config = s.dir.path().join("plans.yaml");
    let mut checked = run(&["check", "--config", config.to_str().unwrap()]);
    checked.as_object_mut().unwrap().remove("attempt");
    assert_eq!(explained, checked);
    // Without the token: a clear error, exit 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["explain", "--admin", &admin, "--path", "/pets"])
        .env_remove("PLANGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
}

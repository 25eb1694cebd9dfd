//! `Request::new` (the one way a request is read) and `plan` (the limits a request meets).

use std::path::Path;

use super::*;
use crate::limit::LimitKey;
use crate::snapshot::hash_key;

const KEY: &str = "engine-test-key-0123456789";

#[test]
fn the_query_string_is_cut_off() {
    let r = Request::new("GET", "/pets/1?a=b?c", None, 1);
    assert_eq!(r.path, "/pets/1");
    assert_eq!(Request::new("GET", "/?", None, 1).path, "/");
    assert_eq!(Request::new("GET", "", None, 1).path, "");
}

#[test]
fn an_over_long_key_is_taken_as_absent() {
    let longest = "é".repeat(crate::snapshot::KEY_MAX_CHARS); // 256 bytes
    let r = Request::new("GET", "/", Some(&longest), 1);
    assert_eq!(r.key, Some(longest.as_str()));
    let at_bound = "k".repeat(MAX_KEY_BYTES);
    let r = Request::new("GET", "/", Some(&at_bound), 1);
    assert_eq!(r.key.map(str::len), Some(MAX_KEY_BYTES));
    let over = "k".repeat(MAX_KEY_BYTES + 1);
    assert_eq!(Request::new("GET", "/", Some(&over), 1).key, None);
}

fn snapshot(extra_stage: &str) -> Snapshot {
    let text = format!(
        r#"
version: 1
apis:
  petstore:
    stages:
      prod:
        throttle: {{ rate: 10, burst: 10 }}
        methods:
          "/pets/GET": {{}}
          "/pets/{{id}}/GET": {{}}
{extra_stage}
usage_plans:
  gold:
    throttle: {{ rate: 5, burst: 5 }}
    quota: {{ limit: 100, period: DAY }}
    api_stages:
      - api: petstore
        stage: prod
        throttle:
          "/pets/{{id}}/GET": {{ rate: 1, burst: 1 }}
api_keys:
  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}
"#,
        hex::encode(hash_key(KEY))
    );
    crate::config::load_str(&text, None, Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"))
        .snapshot
}

fn planned(snap: &Snapshot, method: &str, path: &str) -> Planned {
    let req = Request::new(method, path, Some(KEY), 1).stage(Some("petstore"), Some("prod"));
    plan(snap, &empty_catalog(), &req, 0, 90).unwrap_or_else(|d| panic!("refused: {:?}", d.reason))
}

#[test]
fn limits_come_in_aws_order_then_usage() {
    let snap = snapshot("");
    let p = planned(&snap, "GET", "/pets/7?x=1");
    let kinds: Vec<LimitKind> = p.meta().iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            LimitKind::PlanMethodThrottle,
            LimitKind::PlanThrottle,
            LimitKind::PlanQuota,
            LimitKind::StageMethodThrottle,
            LimitKind::AccountThrottle,
        ]
    );
    // One more ref than reports: the usage counter, last.
    assert_eq!(p.refs.len(), kinds.len() + 1);
    assert!(matches!(
        p.refs.last().map(|r| &r.key),
        Some(LimitKey::Usage { .. })
    ));
    assert_eq!(p.decision.method.as_deref(), Some("/pets/{id}/GET"));
}

#[test]
fn unlisted_methods_share_a_bucket_per_verb() {
    let snap = snapshot("");
    let counter = |method, path| {
        let p = planned(&snap, method, path);
        p.refs
            .iter()
            .find_map(|r| match &r.key {
                LimitKey::StageMethod { method } => Some(method.to_string()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(counter("DELETE", "/pets/"), "petstore/prod unlisted DELETE");
    assert_eq!(counter("POST", "/other"), counter("POST", "/other2"));
    assert_ne!(counter("POST", "/other"), counter("PUT", "/other"));
    // Verbs are case-sensitive; made-up ones share one bucket.
    assert_eq!(counter("delete", "/pets"), "petstore/prod unlisted *");
    assert_eq!(counter("BREW", "/pot"), "petstore/prod unlisted *");
}

#[test]
fn refusals_before_any_limit_name_their_reason() {
    let snap = snapshot("");
    let refuse = |req: Request<'_>| {
        plan(&snap, &empty_catalog(), &req, 0, 90)
            .err()
            .and_then(|d| d.reason)
    };
    assert_eq!(
        refuse(Request::new("GET", "/pets", Some(KEY), 1).stage(Some("nope"), Some("prod"))),
        Some(DenyReason::UnknownApi)
    );
    assert_eq!(
        refuse(Request::new("GET", "/pets", Some(KEY), 1).stage(Some("petstore"), Some("qa"))),
        Some(DenyReason::UnknownStage)
    );
    assert_eq!(
        refuse(Request::new("GET", "/pets", None, 1).stage(Some("petstore"), Some("prod"))),
        Some(DenyReason::MissingKey)
    );
    let other = "another-key-0123456789abc";
    assert_eq!(
        refuse(Request::new("GET", "/pets", Some(other), 1).stage(Some("petstore"), Some("prod"))),
        Some(DenyReason::UnknownKey)
    );
}

#[test]
fn paths_are_canonical_before_matching() {
    for (raw, canonical) in [
        ("/pets", "/pets"),
        ("/", "/"),
        ("//admin/x", "/admin/x"),
        ("/admin//x///", "/admin/x/"),
        ("/pets/../admin/x", "/admin/x"),
        ("/./admin/./x", "/admin/x"),
        ("/../../admin", "/admin"),
        ("/a/b/..", "/a/"),
        ("/%61dmin/x", "/admin/x"),
        ("/%7Eu%2dx%2E%5f", "/~u-x._"),
        ("/admin%2Fx", "/admin/x"),
        ("/admin%2fx", "/admin/x"),
        ("/admin%5Cx", "/admin/x"),
        ("/admin\\x", "/admin/x"),
        ("/%2e%2e/admin", "/admin"),
        ("/a%20b%c3%a9", "/a%20b%C3%A9"),
        ("/bad%zz%4", "/bad%zz%4"),
        ("/é/ü", "/é/ü"),
        ("/x?/../y", "/x"),
    ] {
        let r = Request::new("GET", raw, None, 1);
        assert_eq!(r.path, canonical, "{raw}");
    }
    // No allocation for a path that needs nothing.
    assert!(matches!(
        canonical_path("/pets/{id}/x"),
        std::borrow::Cow::Borrowed(_)
    ));
}

fn empty_catalog() -> crate::catalog::Catalog {
    crate::catalog::Catalog::new(std::sync::Arc::new(crate::store::MemoryStore::new()))
}

#[test]
fn a_key_seen_before_is_still_looked_up_in_the_current_snapshot() {
    // The per-thread cache of key hashes (snapshot::seen) holds hashes, not keys: a key
    // removed, disabled or given another plan is refused or re-planned on the next request.
    let snap = snapshot("");
    for _ in 0..2 {
        let p = planned(&snap, "GET", "/pets");
        assert_eq!(p.decision.key_id.as_deref(), Some("k1"));
    }
    assert!(crate::snapshot::seen::key_hash(KEY).1, "remembered");
    let req = Request::new("GET", "/pets", Some(KEY), 1).stage(Some("petstore"), Some("prod"));
    let edited = |from: &str, to: &str| {
        let text = format!(
            "version: 1\napis:\n  petstore:\n    stages:\n      prod: {{}}\nusage_plans:\n  gold:\n    api_stages: [{{ api: petstore, stage: prod }}]\napi_keys:\n  - {{ id: k1, value_sha256: {}, usage_plans: [gold] }}\n",
            hex::encode(hash_key(KEY))
        )
        .replace(from, to);
        crate::config::load_str(&text, None, Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"))
            .snapshot
    };
    let refused = |s: &Snapshot| {
        plan(s, &empty_catalog(), &req, 0, 90)
            .err()
            .and_then(|d| d.reason)
    };
    let gone = edited(&hex::encode(hash_key(KEY)), &hex::encode(hash_key("other")));
    assert_eq!(refused(&gone), Some(DenyReason::UnknownKey));
    let disabled = edited(
        "usage_plans: [gold] }",
        "usage_plans: [gold], enabled: false }",
    );
    assert_eq!(refused(&disabled), Some(DenyReason::DisabledKey));
    let no_plan = edited("usage_plans: [gold] }", "usage_plans: [] }");
    assert_eq!(refused(&no_plan), Some(DenyReason::KeyNotInPlan));
    assert_eq!(refused(&edited("", "")), None);
}

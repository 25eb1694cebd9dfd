//! End to end through a real Envoy 1.40 with the HTTP ratelimit filter (envoy/ratelimit.yaml)
//! and with ext_authz + ratelimit together (envoy/both.yaml).

mod common;

use common::Stack;

const GOOD: &str = "good-key-0123456789abcdef";
const TIGHT: &str = "tight-key-0123456789abcdef";
const QUOTA: &str = "quota-key-0123456789abcdef";

fn plans() -> String {
    let prod = r#"{ throttle: { rate: 1000, burst: 1000 }, methods: { "/pets/GET": {}, "/bulk/POST": {}, "/health/GET": { api_key_required: false } } }"#;
    common::petstore(
        "",
        &[("prod", prod)],
        &[
            ("gold", "throttle: { rate: 100, burst: 100 }"),
            ("tight", "throttle: { rate: 0.01, burst: 3 }"),
            ("small", "quota: { limit: 12, period: DAY }"),
        ],
        &[
            ("good-1", GOOD, "usage_plans: [gold], customer_id: acme"),
            ("tight-1", TIGHT, "usage_plans: [tight]"),
            ("quota-1", QUOTA, "usage_plans: [small]"),
        ],
    )
}

#[test]
fn rls_admits_and_sets_identity_headers() {
    let s = Stack::start(&plans(), "ratelimit.yaml");
    let r = s.get(
        "GET",
        "/pets?x=1",
        &[("x-api-key", GOOD), ("x-plangate-api-key-id", "spoofed")],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", s.log("plangate.log"));
    r.assert_identity("good-1", "gold");
    // Envoy's own X-RateLimit headers, from plangate's descriptor status.
    assert!(r.header("x-ratelimit-limit").is_some(), "{r:?}");
    assert!(r.header("x-ratelimit-remaining").is_some(), "{r:?}");
}

#[test]
fn rls_burst_spent_is_429_with_ratelimit_headers() {
    let s = Stack::start(&plans(), "ratelimit.yaml");
    for i in 0..3 {
        let r = s.get("GET", "/pets", &[("x-api-key", TIGHT)]);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        // 0.01/s = 36 per HOUR; remaining counts down the burst of 3.
        assert_eq!(
            r.header("x-ratelimit-limit").unwrap().split(',').next(),
            Some("36"),
            "{r:?}"
        );
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(&*(2 - i).to_string()),
            "{r:?}"
        );
    }
    let r = s.get("GET", "/pets", &[("x-api-key", TIGHT)]);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Too Many Requests"}"#);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    assert_eq!(r.header("retry-after"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        r.header("x-ratelimit-limit").unwrap().starts_with("36"),
        "{r:?}"
    );
}

#[test]
fn rls_quota_and_hits_addend() {
    let s = Stack::start(&plans(), "ratelimit.yaml");
    let r = s.get("GET", "/pets", &[("x-api-key", QUOTA)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-quota-remaining"), Some("11"));
    // /bulk has `hits_addend: { number: 5 }` in its route: each call charges 5.
    let r = s.get("POST", "/bulk", &[("x-api-key", QUOTA)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-quota-remaining"),
        Some("6"),
        "{}",
        s.log("plangate.log")
    );
    let r = s.get("POST", "/bulk", &[("x-api-key", QUOTA)]);
    assert_eq!(r.header("x-quota-remaining"), Some("1"));
    // 5 more do not fit in 1.
    let r = s.get("POST", "/bulk", &[("x-api-key", QUOTA)]);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Limit Exceeded"}"#);
    assert_eq!(r.header("x-amzn-errortype"), Some("LimitExceededException"));
    // The last unit is still there for a single call, then the quota is spent.
    assert_eq!(s.get("GET", "/pets", &[("x-api-key", QUOTA)]).status, 200);
    let r = s.get("GET", "/pets", &[("x-api-key", QUOTA)]);
    assert_eq!(r.status, 429);
    assert_eq!(r.body, r#"{"message":"Limit Exceeded"}"#);
}

#[test]
fn rls_identity_failures_are_429_with_the_forbidden_body() {
    let s = Stack::start(&plans(), "ratelimit.yaml");
    for headers in [
        &[][..],
        &[("x-api-key", "unknown-key-0123456789abcdef")][..],
    ] {
        let r = s.get("GET", "/pets", headers);
        assert_eq!(r.status, 429, "{r:?}");
        assert_eq!(r.body, r#"{"message":"Forbidden"}"#);
    }
    // A keyless method works without a key.
    assert_eq!(s.get("GET", "/health", &[]).status, 200);
}

#[test]
fn both_filters_403_for_identity_and_charge_once() {
    let s = Stack::start(&plans(), "both.yaml");
    let r = s.get(
        "GET",
        "/pets",
        &[("x-api-key", "unknown-key-0123456789abcdef")],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Forbidden"}"#);
    let r = s.get(
        "GET",
        "/pets",
        &[("x-api-key", GOOD), ("x-plangate-usage-plan", "spoofed")],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", s.log("plangate.log"));
    let up = r.upstream_headers();
    assert_eq!(
        up.get("x-plangate-usage-plan").map(String::as_str),
        Some("gold"),
        "{up:?}"
    );
    assert_eq!(
        up.get("x-plangate-api-key-id").map(String::as_str),
        Some("good-1"),
        "{up:?}"
    );
    // Each request is charged once (by the ratelimit filter): 12 requests fit the quota.
    let mut admitted = 0;
    for _ in 0..15 {
        if s.get("GET", "/pets", &[("x-api-key", QUOTA)]).status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 12);
    // Over quota, ext_authz's check (no charge) already refuses with the quota answer.
    let r = s.get("GET", "/pets", &[("x-api-key", QUOTA)]);
    assert_eq!(r.status, 429);
    assert_eq!(r.body, r#"{"message":"Limit Exceeded"}"#);
}

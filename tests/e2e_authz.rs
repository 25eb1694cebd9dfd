//! End to end through a real Envoy 1.40 with the ext_authz filter (envoy/ext_authz.yaml): what a
//! client sees (status, body, headers) and what the upstream receives.

mod common;

use common::Stack;

const GOOD: &str = "good-key-0123456789abcdef";
const OFF: &str = "disabled-key-0123456789abc";
const DEV: &str = "dev-only-key-0123456789abc";
const TIGHT: &str = "tight-key-0123456789abcdef";
const QUOTA: &str = "quota-key-0123456789abcdef";
const SHADOW: &str = "shadow-key-0123456789abcdef";

fn plans() -> String {
    let prod = r#"{ throttle: { rate: 1000, burst: 1000 }, unknown_methods: forbid, methods: {
        "/pets/GET": {}, "/pets/{petId}/GET": {}, "/health/GET": { api_key_required: false },
        "/admin/{proxy+}/ANY": { throttle: { rate: 0, burst: 0 } } } }"#;
    common::petstore(
        "",
        &[("prod", prod), ("dev", "{}")],
        &[
            ("gold", "throttle: { rate: 100, burst: 100 }"),
            ("tight", "throttle: { rate: 0.01, burst: 2 }"),
            ("small", "quota: { limit: 3, period: DAY }"),
            ("devplan", "api_stages: [{ api: petstore, stage: dev }]"),
            (
                "trial",
                "enforce: false, throttle: { rate: 0.01, burst: 1 }",
            ),
        ],
        &[
            ("good-1", GOOD, "usage_plans: [gold], customer_id: acme"),
            ("off-1", OFF, "usage_plans: [gold], enabled: false"),
            ("dev-1", DEV, "usage_plans: [devplan]"),
            ("tight-1", TIGHT, "usage_plans: [tight]"),
            ("quota-1", QUOTA, "usage_plans: [small]"),
            ("shadow-1", SHADOW, "usage_plans: [trial]"),
        ],
    )
}

fn stack() -> Stack {
    Stack::start(&plans(), "ext_authz.yaml")
}

#[test]
fn admitted_request_reaches_upstream_with_identity_headers() {
    let s = stack();
    let r = s.get(
        "GET",
        "/pets/42?color=red",
        &[
            ("x-api-key", GOOD),
            // Spoofing attempts: overwritten or removed before the upstream.
            ("x-plangate-api-key-id", "someone-else"),
            ("x-plangate-usage-plan", "platinum"),
            ("x-plangate-extra", "x"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", s.log("plangate.log"));
    let up = r.upstream_headers();
    r.assert_identity("good-1", "gold");
    assert_eq!(
        up.get("x-plangate-customer-id").map(String::as_str),
        Some("acme")
    );
    assert!(!up.contains_key("x-plangate-extra"), "{up:?}");
    // The key is forwarded by default, as AWS does.
    assert_eq!(up.get("x-api-key").map(String::as_str), Some(GOOD));
    // Rate-limit headers reach the client.
    assert!(r.header("ratelimit").is_some(), "{r:?}");
    assert!(r.header("ratelimit-policy").is_some(), "{r:?}");
    // The key value never appears in plangate's logs, even at debug level.
    let log = s.log("plangate.log");
    assert!(log.contains("good-1"), "{log}");
    assert!(!log.contains(GOOD));
}

#[test]
fn forbidden_answers() {
    let s = stack();
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("missing key", &[]),
        ("unknown key", &[("x-api-key", "not-a-configured-key-000")]),
        ("disabled key", &[("x-api-key", OFF)]),
        ("key not in a plan for this stage", &[("x-api-key", DEV)]),
    ];
    for (what, headers) in cases {
        let r = s.get("GET", "/pets", headers);
        assert_eq!(r.status, 403, "{what}: {r:?}");
        assert_eq!(r.body, r#"{"message":"Forbidden"}"#, "{what}");
        assert_eq!(
            r.header("x-amzn-errortype"),
            Some("ForbiddenException"),
            "{what}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    }
}

#[test]
fn unknown_method_is_missing_authentication_token() {
    let s = stack();
    let r = s.get("DELETE", "/pets", &[("x-api-key", GOOD)]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Missing Authentication Token"}"#);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("MissingAuthenticationTokenException")
    );
}

#[test]
fn spent_burst_is_429_too_many_requests() {
    let s = stack();
    for i in 0..2 {
        let r = s.get("GET", "/pets", &[("x-api-key", TIGHT)]);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    let r = s.get("GET", "/pets", &[("x-api-key", TIGHT)]);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Too Many Requests"}"#);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    // One token at 0.01/s: 100 s.
    assert_eq!(r.header("retry-after"), Some("100"));
    assert!(r.header("ratelimit").unwrap().contains("r=0"), "{r:?}");
}

#[test]
fn spent_quota_is_429_limit_exceeded() {
    let s = stack();
    for i in 0..3 {
        let r = s.get("GET", "/pets/1", &[("x-api-key", QUOTA)]);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.header("x-quota-limit"), Some("3"));
        assert_eq!(r.header("x-quota-remaining"), Some(&*(2 - i).to_string()));
    }
    let r = s.get("GET", "/pets/1", &[("x-api-key", QUOTA)]);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Limit Exceeded"}"#);
    assert_eq!(r.header("x-amzn-errortype"), Some("LimitExceededException"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
}

#[test]
fn keyless_method_works_without_a_key() {
    let s = stack();
    let r = s.get("GET", "/health", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let up = r.upstream_headers();
    assert!(!up.contains_key("x-plangate-api-key-id"));
}

/// Shadow mode through Envoy: a plan with `enforce: false` lets over-limit requests reach the
/// upstream, which is told what enforcement would have answered; the metrics count them.
#[test]
fn shadow_mode_lets_over_limit_requests_through_with_a_header() {
    let s = stack();
    let r = s.get("GET", "/pets", &[("x-api-key", SHADOW)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !r.upstream_headers()
            .contains_key("x-plangate-shadow-outcome")
    );
    for i in 0..2 {
        let r = s.get(
            "GET",
            "/pets",
            &[
                ("x-api-key", SHADOW),
                ("x-plangate-shadow-outcome", "forged"),
            ],
        );
        assert_eq!(r.status, 200, "over-limit request {i} let through: {r:?}");
        let up = r.upstream_headers();
        assert_eq!(
            up.get("x-plangate-shadow-outcome").map(String::as_str),
            Some("throttled"),
            "{up:?}"
        );
        assert_eq!(
            up.get("x-plangate-usage-plan").map(String::as_str),
            Some("trial")
        );
    }
    // plangate's admin port (the stack binds it to :0): from its log.
    let log = s.log("plangate.log");
    let admin: u16 = log
        .lines()
        .find(|l| l.contains("admin HTTP listening"))
        .and_then(|l| l.rsplit_once("addr=127.0.0.1:"))
        .and_then(|(_, p)| {
            p.trim()
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no admin address in\n{log}"));
    let metrics = common::http(admin, "GET", "/metrics", &[]).body;
    let shadowed = metrics
        .lines()
        .find(|l| {
            l.starts_with("plangate_decisions_total{")
                && l.contains(r#"plan="trial""#)
                && l.contains(r#"shadow="true""#)
        })
        .unwrap_or_else(|| panic!("no shadow count in\n{metrics}"));
    assert!(shadowed.contains(r#"outcome="throttled""#), "{shadowed}");
    assert!(shadowed.ends_with(" 2"), "{shadowed}");
}

/// A refused method is refused however its path is spelt: merged slashes, dot segments,
/// percent-encoded letters and slashes (Envoy normalises with the shipped config, and plangate
/// decides on the canonical path itself).
#[test]
fn path_tricks_do_not_pass_a_refused_method() {
    let s = stack();
    for path in [
        "/admin/x",
        "//admin/x",
        "/pets/../admin/x",
        "/./admin/x",
        "/%61dmin/x",
        "/admin%2Fx",
        "/pets/%2e%2e/admin/x",
    ] {
        let r = s.get("GET", path, &[("x-api-key", GOOD)]);
        assert!(
            r.status == 429 || r.status == 400,
            "{path}: {} {r:?}",
            r.status
        );
        assert!(
            !r.body.contains("\"headers\""),
            "{path} reached the upstream: {r:?}"
        );
    }
}

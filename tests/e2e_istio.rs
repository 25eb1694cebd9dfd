//! End to end through a real Envoy 1.40 configured as Istio configures it (envoy/istio/): the
//! ext_authz filter behind an RBAC shadow policy, as istiod renders an `AuthorizationPolicy` with
//! `action: CUSTOM`; the ratelimit filter with descriptors from request headers only, as the
//! EnvoyFilters of Istio's global rate limiting produce. Neither carries an API or stage: plangate
//! finds them from the host and base path (`domain_names`). And the config mounted as a
//! ConfigMap, updated as the kubelet updates it.

mod common;

use std::time::Duration;

use common::{Stack, Succeeds, sha};
use plangate::clock::Stopwatch;

const GOOD: &str = "istio-good-key-0123456789ab";
const TIGHT: &str = "istio-tight-key-0123456789a";
const QUOTA: &str = "istio-quota-key-0123456789a";

fn plans(extra_mapping: &str) -> String {
    let domains = format!(
        r#"domain_names:
  api.example.com:
    base_path_mappings:
      - {{ base_path: v1, api: petstore, stage: prod }}
      - {{ base_path: "(none)", api: petstore, stage: beta }}
{extra_mapping}
  "*.tenants.example.net":
    base_path_mappings:
      - {{ base_path: "(none)", api: petstore, stage: prod }}"#
    );
    let pets = r#"{ methods: { "/pets/GET": {} } }"#;
    common::petstore(
        &domains,
        &[("prod", pets), ("beta", pets)],
        &[
            (
                "gold",
                "api_stages: [{ api: petstore, stage: prod }, { api: petstore, stage: beta }]",
            ),
            ("tight", "throttle: { rate: 0.01, burst: 2 }"),
            ("small", "quota: { limit: 3, period: DAY }"),
        ],
        &[
            ("good-1", GOOD, "usage_plans: [gold], customer_id: acme"),
            ("tight-1", TIGHT, "usage_plans: [tight]"),
            ("quota-1", QUOTA, "usage_plans: [small]"),
        ],
    )
}

fn get(s: &Stack, host: &str, path: &str, key: Option<&str>) -> common::HttpResponse {
    let mut headers = vec![("host", host)];
    if let Some(k) = key {
        headers.push(("x-api-key", k));
    }
    s.get("GET", path, &headers)
}

/// The cases both filters answer alike (a throttle and a quota, identity upstream, every kind of
/// mapping); `refused_identity` is the status of an unknown domain (ext_authz 403, RLS 429).
fn common_cases(s: &Stack, refused_identity: u16) {
    // A base path: /v1/pets on api.example.com is prod's /pets.
    let r = get(s, "api.example.com", "/v1/pets", Some(GOOD));
    assert_eq!(r.status, 200, "{r:?}");
    r.assert_identity("good-1", "gold");
    // The upstream gets the path as sent: the base path is a routing matter for plangate only.
    assert!(r.body.contains(r#""path": "/v1/pets""#), "{}", r.body);
    // (none): the rest of api.example.com is beta.
    assert_eq!(get(s, "api.example.com", "/pets", Some(GOOD)).status, 200);
    // A wildcard domain.
    assert_eq!(
        get(s, "acme.tenants.example.net", "/pets", Some(GOOD)).status,
        200
    );
    assert_eq!(
        get(s, "acme.tenants.example.net:8080", "/pets", Some(GOOD)).status,
        200
    );
    // A host no domain claims.
    let r = get(s, "unknown.example.org", "/pets", Some(GOOD));
    assert_eq!(r.status, refused_identity, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Forbidden"}"#);
    // A key only prod grants, on beta's base path.
    assert_eq!(
        get(s, "api.example.com", "/pets", Some(TIGHT)).status,
        refused_identity
    );
    // The throttle: burst 2, through two hosts that lead to prod.
    assert_eq!(
        get(s, "api.example.com", "/v1/pets", Some(TIGHT)).status,
        200
    );
    assert_eq!(
        get(s, "b.tenants.example.net", "/pets", Some(TIGHT)).status,
        200
    );
    let r = get(s, "api.example.com", "/v1/pets", Some(TIGHT));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Too Many Requests"}"#);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    // The quota: 3 a day.
    for _ in 0..3 {
        assert_eq!(
            get(s, "api.example.com", "/v1/pets", Some(QUOTA)).status,
            200
        );
    }
    let r = get(s, "api.example.com", "/v1/pets", Some(QUOTA));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Limit Exceeded"}"#);
    assert_eq!(r.header("x-amzn-errortype"), Some("LimitExceededException"));
}

#[test]
fn ext_authz_as_istio_renders_a_custom_authorization_policy() {
    let s = Stack::start(&plans(""), "istio/ext_authz.yaml");
    common_cases(&s, 403);
    // A missing key is a 403 too.
    let r = get(&s, "api.example.com", "/v1/pets", None);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, r#"{"message":"Forbidden"}"#)
    );
    // A path the policy does not select passes without a Check: not even a host plangate does
    // not know is refused there.
    let r = get(&s, "unknown.example.org", "/healthz", None);
    assert_eq!(r.status, 200, "{r:?}");
    // Client-sent identity headers never reach the upstream as sent.
    let r = s.get(
        "GET",
        "/v1/pets",
        &[
            ("host", "api.example.com"),
            ("x-api-key", GOOD),
            ("x-plangate-api-key-id", "someone-else"),
        ],
    );
    assert_eq!(
        r.upstream_headers()
            .get("x-plangate-api-key-id")
            .map(String::as_str),
        Some("good-1")
    );
    // plangate decided from the host alone: its log names the stages the hosts led to.
    let log = strip_ansi(&s.log("plangate.log"));
    assert!(log.contains("stage=\"prod\""), "{log}");
    assert!(log.contains("stage=\"beta\""), "{log}");
    assert!(!log.contains(GOOD), "a key value in plangate's log");
}

/// The log without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The sidecar's RLS descriptors name the workload's API stage (petstore/prod) as fixed entries:
/// whatever Host the client sends, prod decides (issue 25, item 1).
#[test]
fn ratelimit_as_istio_global_rate_limiting_wires_it() {
    let s = Stack::start(&plans(""), "istio/ratelimit.yaml");
    for host in ["api.example.com", "unknown.example.org", "a,b"] {
        assert_eq!(get(&s, host, "/pets", Some(GOOD)).status, 200, "{host}");
    }
    // A key only prod grants is admitted on a host that maps to beta: the Host chose nothing.
    assert_eq!(get(&s, "api.example.com", "/pets", Some(TIGHT)).status, 200);
    assert_eq!(get(&s, "x.example.org", "/pets", Some(TIGHT)).status, 200);
    // The throttle (burst 2) and the quota (3 a day), with AWS's bodies.
    let r = get(&s, "api.example.com", "/pets", Some(TIGHT));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Too Many Requests"}"#);
    for _ in 0..3 {
        assert_eq!(get(&s, "any.example.org", "/pets", Some(QUOTA)).status, 200);
    }
    let r = get(&s, "any.example.org", "/pets", Some(QUOTA));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Limit Exceeded"}"#);
    // RLS cannot answer 403: identity failures are 429 with the Forbidden body; a keyless
    // request still sends its descriptor (`skip_if_absent`), and is refused.
    let r = get(&s, "api.example.com", "/pets", None);
    assert_eq!(
        (r.status, r.body.as_str()),
        (429, r#"{"message":"Forbidden"}"#)
    );
    // The upstream gets the identity.
    let r = get(&s, "api.example.com", "/pets", Some(GOOD));
    assert_eq!(
        r.upstream_headers()
            .get("x-plangate-api-key-id")
            .map(String::as_str),
        Some("good-1")
    );
}

/// Polls `f` until it holds, for at most `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let waited = Stopwatch::start();
    while waited.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn a_configmap_update_serves_within_seconds_and_keeps_counters() {
    let s = Stack::start_configmap(&plans(""), "istio/ext_authz.yaml");
    // Two of the quota's three used before the update.
    for _ in 0..2 {
        assert_eq!(
            get(&s, "api.example.com", "/v1/pets", Some(QUOTA)).status,
            200
        );
    }
    assert_eq!(
        get(&s, "api.example.com", "/v2/pets", Some(GOOD)).status,
        200,
        "beta via (none)"
    );
    // The update maps /v2 to prod, where the quota key is known.
    s.swap_configmap(&plans(
        "      - { base_path: v2, api: petstore, stage: prod }",
    ));
    assert!(
        eventually(15, || get(&s, "api.example.com", "/v2/pets", Some(QUOTA))
            .status
            == 200),
        "the new mapping was not served within 15 s:\n{}",
        s.log("plangate.log")
    );
    // That was the third of three: the counter survived the reload.
    let r = get(&s, "api.example.com", "/v1/pets", Some(QUOTA));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, r#"{"message":"Limit Exceeded"}"#);
}

/// A sidecar's mesh certificate: a self-signed one whose URI SAN is the workload's SPIFFE id.
fn spiffe_certificate(dir: &std::path::Path, spiffe: &str) -> (String, String) {
    let (cert, key) = (dir.join("workload.pem"), dir.join("workload.key"));
    std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/O=cluster.local"])
        .args(["-addext", &format!("subjectAltName=URI:{spiffe}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .succeeds();
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// `curl` over TLS to Envoy's listener with a Host header: the status.
fn https_status(port: u16, host: &str, path: &str, key: Option<&str>) -> u16 {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ])
    .args(["-H", &format!("host: {host}")]);
    if let Some(k) = key {
        cmd.args(["-H", &format!("x-api-key: {k}")]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// At a sidecar the Host header is the client's to choose (the inbound virtual host matches
/// `*`): the workload's identity — the SPIFFE id of the listener's certificate, which Envoy sends
/// as `destination.principal` — names the API stage instead (issue 25, item 1).
#[test]
fn a_sidecar_decides_by_the_workload_identity_not_the_host() {
    const SPIFFE: &str = "spiffe://cluster.local/ns/petstore/sa/petstore";
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = spiffe_certificate(certs.path(), SPIFFE);
    let plans = format!(
        r#"
version: 1
apis:
  petstore:
    stages:
      prod: {{}}
      open: {{ api_key_required: false }}
domain_names:
  api.example.com:
    base_path_mappings: [{{ api: petstore, stage: prod }}]
  "*.tenants.example.net":
    base_path_mappings: [{{ api: petstore, stage: open }}]
workloads:
  "{SPIFFE}": {{ api: petstore, stage: prod }}
usage_plans:
  gold:
    api_stages: [{{ api: petstore, stage: prod }}]
api_keys:
  - {{ id: good-1, value_sha256: {good}, usage_plans: [gold] }}
"#,
        good = sha(GOOD)
    );
    // Istio's inbound listener terminates the mesh's mTLS with the workload's certificate.
    let tls = format!(
        r#"      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                tls_certificates:
                  - certificate_chain: {{ filename: "{cert}" }}
                    private_key: {{ filename: "{key}" }}
          filters:"#
    );
    let s = Stack::start_custom(
        &plans,
        "istio/ext_authz.yaml",
        &[],
        &[("      filter_chains:\n        - filters:".to_owned(), tls)],
    );
    // The host of a keyless stage does not open the workload.
    assert_eq!(
        https_status(s.listener, "x.tenants.example.net", "/pets", None),
        403
    );
    assert_eq!(
        https_status(s.listener, "api.example.com", "/pets", None),
        403
    );
    assert_eq!(
        https_status(s.listener, "x.tenants.example.net", "/pets", Some(GOOD)),
        200
    );
}

/// A Host that is not a host (two joined, userinfo) is refused, never suffix-matched; a path
/// with escaped slashes is decoded by Envoy (the shipped mesh config's path normalization), so
/// the upstream gets the path plangate decided on (issue 25, items 1 and 2).
#[test]
fn malformed_hosts_are_refused_and_escaped_slashes_reach_the_upstream_decoded() {
    let s = Stack::start(&plans(""), "istio/ext_authz.yaml");
    // Two Host headers: Envoy refuses them or joins them; either way nothing is admitted.
    let r = s.get(
        "GET",
        "/pets",
        &[
            ("host", "api.example.com"),
            ("host", "a.tenants.example.net"),
        ],
    );
    assert!(matches!(r.status, 400 | 403), "{r:?}");
    let r = s.get("GET", "/pets", &[("host", "evil@a.tenants.example.net")]);
    assert!(matches!(r.status, 400 | 403), "{r:?}");
    // `/v1%2F..%2Fpets`: the upstream gets `/pets`, the path the decision was made on.
    let r = get(&s, "api.example.com", "/v1%2F..%2Fpets", Some(GOOD));
    assert_eq!(r.status, 200, "{r:?}");
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["path"], "/pets", "{}", r.body);
}

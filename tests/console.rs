//! The operator console at /ui/ over HTTP, as a browser would use it (the browser tests of
//! issue 24 come on top): sign-in and its throttle, sessions, CSRF, read-only sessions,
//! escaping, the headers every page carries, and a key's value shown once.

mod common;

use common::{HttpResponse, Plangate};

const TOKEN: &str = "console-token-0123456789abcdef";
const READ: (&str, &str) = ("AKIDCONSOLEREAD", "console-read-secret-0123456789");

fn served() -> ((tempfile::TempDir, tempfile::TempDir), Plangate) {
    let plans = common::petstore(
        "",
        &[("prod", "{}")],
        &[("gold", "")],
        &[(
            "file-1",
            "console-file-key-0123456789",
            "usage_plans: [gold], name: filekey",
        )],
    );
    let (creds, file) = common::file_in_new_dir(
        "credentials.csv",
        format!(
            "access_key_id,secret_access_key,role\n{},{},read\n",
            READ.0, READ.1
        ),
    );
    let (dir, path) = common::plans_dir(plans);
    let p = Plangate::start(
        &path,
        &[
            "--admin-token",
            TOKEN,
            "--aws-credentials",
            file.to_str().unwrap(),
        ],
        dir.path().join("plangate.log"),
    );
    ((dir, creds), p)
}

fn form(admin: u16, path: &str, cookie: Option<&str>, body: &str) -> HttpResponse {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    let c;
    if let Some(v) = cookie {
        c = format!("plangate_console={v}");
        headers.push(("cookie", &c));
    }
    common::http_with_body(admin, "POST", path, &headers, body)
}

fn get(admin: u16, path: &str, cookie: &str) -> HttpResponse {
    let c = format!("plangate_console={cookie}");
    common::http(admin, "GET", path, &[("cookie", &c)])
}

fn sign_in(admin: u16, body: &str) -> String {
    let r = form(admin, "/ui/signin", None, body);
    assert_eq!(r.status, 303, "{r:?}");
    let set = r.header("set-cookie").unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("plangate_console="))
        .unwrap()
        .to_owned()
}

fn csrf(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn sign_in_sessions_and_keys() {
    let (_dirs, p) = served();
    let a = p.admin;
    // Not signed in: to the sign-in page; its form has labels; every page has the CSP.
    let r = common::http(a, "GET", "/ui/keys", &[]);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/ui/signin"));
    let r = common::http(a, "GET", "/ui/signin", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains(r#"<label for="token">"#), "{}", r.body);
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let cookie = sign_in(a, &format!("token={TOKEN}"));
    let page = get(a, "/ui/keys", &cookie);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("file-1"), "the file's key listed");
    assert!(
        !page.body.contains("console-file-key"),
        "a key value on a page"
    );
    let token = csrf(&page.body);

    // Creating a key: refused without the CSRF token, and from another site.
    let name = r#"<script>alert("x")</script>"#;
    let body = format!("name={}&customer_id=acme&plan=gold", enc(name));
    assert_eq!(form(a, "/ui/keys", Some(&cookie), &body).status, 403);
    let cross = common::http_with_body(
        a,
        "POST",
        "/ui/keys",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &format!("plangate_console={cookie}")),
            ("sec-fetch-site", "cross-site"),
        ],
        &format!("csrf={token}&{body}"),
    );
    assert_eq!(cross.status, 403, "a cross-site form");
    let made = form(
        a,
        "/ui/keys",
        Some(&cookie),
        &format!("csrf={token}&{body}"),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    assert!(
        !made.body.contains("<script>alert"),
        "unescaped: {}",
        made.body
    );
    let at = made.body.find(r#"id="value""#).unwrap();
    let value_at = made.body[at..].find("value=\"").unwrap() + at + 7;
    let value = &made.body[value_at..value_at + 40];
    assert!(value.chars().all(|c| c.is_ascii_alphanumeric()), "{value}");
    // Listed, escaped, never with its value again.
    let page = get(a, "/ui/keys", &cookie);
    assert!(page.body.contains("&lt;script&gt;"), "escaped name");
    assert!(!page.body.contains("<script>"));
    assert!(!page.body.contains(value), "the value shown again");
    // The key works: the control plane sees it in gold.
    let listed = common::http(
        a,
        "GET",
        "/usageplans/gold/keys",
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    assert!(
        listed.body.contains("acme") || listed.body.contains("alert"),
        "{}",
        listed.body
    );

    // The key's page: a request decided with it shows in its usage (chart and table); disabled
    // there, it is refused; out of its plan, it is refused too.
    let id = {
        let at = page.body.find("/ui/keys/").unwrap() + 9;
        let ids: Vec<&str> = page.body[at..]
            .split("/ui/keys/")
            .map(|s| s.split('"').next().unwrap())
            .filter(|s| *s != "file-1" && !s.contains('/'))
            .collect();
        ids[0].to_owned()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let decide = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut c = common::authz_client(p.grpc).await;
            let r = c
                .check(common::check_request_to(value, "/pets", "petstore", "prod"))
                .await
                .unwrap();
            common::check_status(&r.into_inner())
        })
    };
    // Live: looking starts the collector; the next decision appears there, with its key.
    let live = get(a, "/ui/live", &cookie);
    assert_eq!(live.status, 200);
    assert!(
        live.body.contains(r#"src="/ui/assets/live.js""#),
        "refreshes itself"
    );
    assert_eq!(decide(&rt), 200);
    common::wait_until("the decision in Live", || {
        let live = get(a, &format!("/ui/live?key={id}&outcome=admitted"), &cookie);
        live.body.contains(&format!("/ui/keys/{id}"))
    });
    let js = get(a, "/ui/assets/live.js", &cookie);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let detail = get(a, &format!("/ui/keys/{id}"), &cookie);
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(detail.body.contains("<svg"), "a chart");
    assert!(
        detail.body.contains("<td>1</td>"),
        "the request counted: {}",
        detail.body
    );
    // The usage page and its CSV: the numbers GetUsage gives.
    let today = chrono::DateTime::from_timestamp_nanos(plangate::clock::Clock::now(
        &plangate::clock::SystemClock,
    ))
    .date_naive()
    .to_string();
    let usage = get(
        a,
        &format!("/ui/usage?plan=gold&key={id}&start={today}&end={today}"),
        &cookie,
    );
    assert_eq!(usage.status, 200);
    assert!(usage.body.contains("<td>1</td>"), "{}", usage.body);
    let csv = get(
        a,
        &format!("/ui/usage?plan=gold&key={id}&start={today}&end={today}&format=csv"),
        &cookie,
    );
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let aws = common::http(
        a,
        "GET",
        &format!("/usageplans/gold/usage?startDate={today}&endDate={today}&keyId={id}"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    let aws: serde_json::Value = serde_json::from_str(&aws.body).unwrap();
    let (used, remaining) = (&aws["values"][&id][0][0], &aws["values"][&id][0][1]);
    let remaining = if remaining.is_null() {
        String::new()
    } else {
        remaining.to_string()
    };
    assert!(
        csv.body
            .contains(&format!("gold,{id},{today},{used},{remaining}")),
        "{} vs {aws}",
        csv.body
    );
    let r = form(
        a,
        &format!("/ui/keys/{id}/disable"),
        Some(&cookie),
        &format!("csrf={token}"),
    );
    assert_eq!(r.status, 303);
    assert_eq!(decide(&rt), 403, "disabled");
    form(
        a,
        &format!("/ui/keys/{id}/enable"),
        Some(&cookie),
        &format!("csrf={token}"),
    );
    assert_eq!(decide(&rt), 200);
    let r = form(
        a,
        &format!("/ui/keys/{id}/remove-plan"),
        Some(&cookie),
        &format!("csrf={token}&plan=gold"),
    );
    assert_eq!(r.status, 303);
    assert_eq!(decide(&rt), 403, "out of its plan");
    let r = form(
        a,
        &format!("/ui/keys/{id}/add-plan"),
        Some(&cookie),
        &format!("csrf={token}&plan=gold"),
    );
    assert_eq!(r.status, 303);
    assert_eq!(decide(&rt), 200, "back in it");

    // Explain: the decision for the key, limit by limit, charging nothing; the key's value is
    // posted, never echoed back.
    let form_page = get(a, "/ui/explain", &cookie);
    assert!(form_page.body.contains("petstore:prod"));
    let explained = form(
        a,
        "/ui/explain",
        Some(&cookie),
        &format!("csrf={token}&stage=petstore%3Aprod&method=GET&path=%2Fpets&key={value}"),
    );
    assert_eq!(explained.status, 200);
    assert!(
        explained.body.contains("Decision: admitted"),
        "{}",
        explained.body
    );
    assert!(explained.body.contains(&id), "the key's id");
    assert!(
        !explained.body.contains(value),
        "the key's value shown back"
    );
    let before = get(a, &format!("/ui/keys/{id}"), &cookie).body;
    form(
        a,
        "/ui/explain",
        Some(&cookie),
        &format!("csrf={token}&stage=petstore%3Aprod&method=GET&path=%2Fpets&key={value}"),
    );
    assert_eq!(
        get(a, &format!("/ui/keys/{id}"), &cookie).body,
        before,
        "explain charged nothing (the key's usage unchanged)"
    );
    assert_eq!(
        form(a, "/ui/explain", Some(&cookie), "stage=petstore%3Aprod").status,
        403,
        "no CSRF token"
    );

    // Sign out: the cookie is cleared and the old one no longer works.
    let out = form(a, "/ui/signout", Some(&cookie), &format!("csrf={token}"));
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(get(a, "/ui/keys", &cookie).status, 303);
    // A forged cookie: to the sign-in page.
    assert_eq!(get(a, "/ui/", "0123456789abcdef").status, 303);
}

#[test]
fn a_read_session_changes_nothing() {
    let (_dirs, p) = served();
    let a = p.admin;
    let cookie = sign_in(
        a,
        &format!("access_key_id={}&secret_access_key={}", READ.0, READ.1),
    );
    let page = get(a, "/ui/keys", &cookie);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("(read only)"));
    assert!(!page.body.contains("Create a key"), "a create form");
    assert!(!page.body.contains("/disable"), "an action");
    // The sign-out form carries the session's token; a change with it is still refused.
    let token = csrf(&page.body);
    let r = form(
        a,
        "/ui/keys",
        Some(&cookie),
        &format!("csrf={token}&name=x"),
    );
    assert_eq!(r.status, 403);
    let r = form(
        a,
        "/ui/keys/file-1/disable",
        Some(&cookie),
        &format!("csrf={token}"),
    );
    assert_eq!(r.status, 403);
    // Plans are readable: the file's plan, read-only, naming its file.
    let plan = get(a, "/ui/plans/gold", &cookie);
    assert_eq!(plan.status, 200);
    assert!(plan.body.contains("plans.yaml"), "{}", plan.body);
}

#[test]
fn failed_sign_ins_are_throttled() {
    let (_dirs, p) = served();
    let a = p.admin;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(form(a, "/ui/signin", None, "token=wrong").status);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    // The right token is refused too while the address is throttled: no guessing around it.
    assert_eq!(
        form(a, "/ui/signin", None, &format!("token={TOKEN}")).status,
        429
    );
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("console sign-in failed"), "{log}");
    assert!(!log.contains("wrong"), "a presented token in the log");
}

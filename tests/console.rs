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
        &[
            ("prod", "{}"),
            ("beta", r#"{ methods: { "/pets/GET": {} } }"#),
        ],
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

/// The `Location` of a redirect.
fn location(r: &HttpResponse) -> String {
    r.header("location").unwrap_or_default().to_owned()
}

/// The value of the input `id` of a page.
fn input_value(page: &str, id: &str) -> String {
    let at = page.find(&format!(r#"id="{id}""#)).expect(id);
    let from = at + page[at..].find("value=\"").unwrap() + 7;
    page[from..from + page[from..].find('"').unwrap()].to_owned()
}

#[test]
fn plans_are_made_changed_and_deleted_from_their_forms() {
    let (_dirs, p) = served();
    let a = p.admin;
    let cookie = sign_in(a, &format!("token={TOKEN}"));
    // The overview: looking at it starts watching decisions (the keys nearest their quota).
    let overview = get(a, "/ui/", &cookie);
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("Decisions per second"));
    assert!(overview.body.contains("fingerprint"));
    let new = get(a, "/ui/new-plan", &cookie);
    assert_eq!(new.status, 200, "{}", new.body);
    let token = csrf(&new.body);
    assert!(new.body.contains("petstore:beta"), "a stage to choose");
    // Made: names and descriptions are escaped wherever they are shown.
    let made = form(
        a,
        "/ui/new-plan",
        Some(&cookie),
        &format!(
            "csrf={token}&name={}&description={}&stage=petstore%3Abeta&rate=5&burst=10&quota_limit=100&quota_period=DAY&methods=",
            enc("<i>Silver</i>"),
            enc("<script>alert(1)</script>")
        ),
    );
    assert_eq!(made.status, 303, "{}", made.body);
    let at = location(&made);
    let id = at.strip_prefix("/ui/plans/").unwrap().to_owned();
    let page = get(a, &at, &cookie);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("&lt;i&gt;Silver&lt;/i&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert"), "unescaped");
    assert!(page.body.contains("Edit this plan"));
    assert!(page.body.contains("100 per DAY"));
    let list = get(a, "/ui/plans", &cookie);
    assert!(list.body.contains("&lt;i&gt;Silver"), "{}", list.body);
    assert!(!list.body.contains("<i>Silver"));

    // Edited: the form comes back filled; a new quota and a per-method throttle, saved whole.
    let edit = get(a, &format!("/ui/plans/{id}/edit"), &cookie);
    assert_eq!(edit.status, 200);
    assert_eq!(input_value(&edit.body, "pquota"), "100");
    let edited = |quota: &str, methods: &str, stage: &str| {
        form(
            a,
            &format!("/ui/plans/{id}/edit"),
            Some(&cookie),
            &format!(
                "csrf={token}&name=Silver&description=&stage={}&rate=5&burst=10&quota_limit={quota}&quota_period=WEEK&methods={}",
                enc(stage),
                enc(methods)
            ),
        )
    };
    let r = edited("200", "petstore:beta /pets GET 1 2", "petstore:beta");
    assert_eq!(r.status, 303, "{}", r.body);
    let page = get(a, &format!("/ui/plans/{id}"), &cookie);
    assert!(page.body.contains("200 per WEEK"), "{}", page.body);
    assert!(page.body.contains("/pets/GET"), "{}", page.body);
    // Refused, with the reason, and nothing changed: a bad line, a stage that does not exist, a
    // method the stage does not have.
    let r = edited("300", "petstore:beta /pets GET fast 2", "petstore:beta");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("line 1"), "{}", r.body);
    let r = edited("300", "", "petstore:nope");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("petstore:nope"), "{}", r.body);
    let r = edited("300", "petstore:beta /cats GET 1 2", "petstore:beta");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        get(a, &format!("/ui/plans/{id}"), &cookie)
            .body
            .contains("200 per WEEK")
    );
    // Without the CSRF token: refused.
    let r = form(
        a,
        &format!("/ui/plans/{id}/edit"),
        Some(&cookie),
        "name=x&stage=petstore%3Abeta",
    );
    assert_eq!(r.status, 403);
    // The file's plan is not edited here.
    assert_eq!(get(a, "/ui/plans/gold/edit", &cookie).status, 409);

    // A key in the plan: decided, counted; its usage set back to the limit from its page.
    let created = form(
        a,
        "/ui/keys",
        Some(&cookie),
        &format!(
            "csrf={token}&name=silver-key&plan={id}&customer_id={}",
            enc("<img src=x onerror=alert(1)>")
        ),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    // A customer id is shown as text wherever it appears, and found by the search.
    let found = get(
        a,
        &format!("/ui/keys?customer={}", enc("<img src=x onerror=alert(1)>")),
        &cookie,
    );
    assert!(found.body.contains("silver-key"), "{}", found.body);
    assert!(found.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!found.body.contains("<img src=x"));
    let value = input_value(&created.body, "value");
    let key_id = {
        let at = created.body.find("<code>").unwrap() + 6;
        created.body[at..at + created.body[at..].find('<').unwrap()].to_owned()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let mut c = common::authz_client(p.grpc).await;
        let r = c
            .check(common::check_request_to(
                &value, "/pets", "petstore", "beta",
            ))
            .await
            .unwrap();
        common::check_status(&r.into_inner())
    });
    assert_eq!(status, 200);
    common::wait_until("the key among the nearest their quota", || {
        let o = get(a, "/ui/", &cookie);
        o.body.contains(&format!("/ui/keys/{key_id}")) && o.body.contains("199 of 200")
    });
    let overview = get(a, "/ui/", &cookie);
    assert!(
        overview.body.contains("<td>admitted</td><td>1</td>"),
        "{}",
        overview.body
    );
    let detail = get(a, &format!("/ui/keys/{key_id}"), &cookie);
    assert!(
        detail.body.contains("<td>1</td><td>199</td>"),
        "{}",
        detail.body
    );
    assert!(detail.body.contains("Set remaining"));
    let r = form(
        a,
        &format!("/ui/keys/{key_id}/usage"),
        Some(&cookie),
        &format!("csrf={token}&plan={id}&remaining=200"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let detail = get(a, &format!("/ui/keys/{key_id}"), &cookie);
    assert!(detail.body.contains("<td>200</td>"), "{}", detail.body);
    let r = form(
        a,
        &format!("/ui/keys/{key_id}/usage"),
        Some(&cookie),
        &format!("csrf={token}&plan={id}&remaining=lots"),
    );
    assert_eq!(r.status, 400);

    // Deleted: gone from the list; its key stays.
    let r = form(
        a,
        &format!("/ui/plans/{id}/delete"),
        Some(&cookie),
        &format!("csrf={token}"),
    );
    assert_eq!(r.status, 303);
    assert_eq!(get(a, &format!("/ui/plans/{id}"), &cookie).status, 404);
    assert_eq!(get(a, &format!("/ui/keys/{key_id}"), &cookie).status, 200);

    // A read session: no form, and the endpoints refuse.
    let read = sign_in(
        a,
        &format!("access_key_id={}&secret_access_key={}", READ.0, READ.1),
    );
    let plans = get(a, "/ui/plans", &read);
    assert!(!plans.body.contains("/ui/new-plan"));
    assert_eq!(get(a, "/ui/new-plan", &read).status, 403);
    let read_token = csrf(&plans.body);
    let r = form(
        a,
        "/ui/new-plan",
        Some(&read),
        &format!("csrf={read_token}&name=x&stage=petstore%3Abeta"),
    );
    assert_eq!(r.status, 403);
    let r = form(
        a,
        &format!("/ui/keys/{key_id}/usage"),
        Some(&read),
        &format!("csrf={read_token}&plan=gold&remaining=1"),
    );
    assert_eq!(r.status, 403);
}

#[test]
fn ten_thousand_sign_ins_are_refused_and_harm_no_session() {
    let (_dirs, p) = served();
    let a = p.admin;
    let cookie = sign_in(a, &format!("token={TOKEN}"));
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..10_000 {
        let status = form(a, "/ui/signin", None, &format!("token=guess-{i}")).status;
        *counts.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        std::collections::BTreeMap::from([(401, 5), (429, 9_995)])
    );
    assert_eq!(
        p.metric(r#"plangate_console_signins_total{result="throttled"}"#),
        Some(9_995.0)
    );
    assert_eq!(
        p.metric(r#"plangate_console_signins_total{result="failed"}"#),
        Some(5.0)
    );
    // The session made before still works; the server still answers.
    assert_eq!(get(a, "/ui/keys", &cookie).status, 200);
    assert_eq!(common::http(a, "GET", "/healthz", &[]).status, 200);
}

#[test]
fn the_consumer_page_shows_one_keys_own_numbers() {
    let plans = common::petstore(
        "",
        &[("prod", "{}")],
        &[("gold", "quota: { limit: 100, period: DAY }")],
        &[
            (
                "k1",
                "consumer-key-one-0123456789",
                "usage_plans: [gold], name: first-customer",
            ),
            (
                "k2",
                "consumer-key-two-0123456789",
                "usage_plans: [gold], name: second-customer",
            ),
        ],
    );
    let (dir, path) = common::plans_dir(plans);
    let port = common::free_port();
    let p = Plangate::start(
        &path,
        &[
            "--admin-token",
            TOKEN,
            "--consumer-addr",
            &format!("127.0.0.1:{port}"),
        ],
        dir.path().join("plangate.log"),
    );
    common::wait_until("the consumer page", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = common::authz_client(p.grpc).await;
        for key in [
            "consumer-key-one-0123456789",
            "consumer-key-one-0123456789",
            "consumer-key-one-0123456789",
            "consumer-key-two-0123456789",
        ] {
            let r = c
                .check(common::check_request_to(key, "/pets", "petstore", "prod"))
                .await
                .unwrap();
            assert_eq!(common::check_status(&r.into_inner()), 200);
        }
    });
    let home = common::http(port, "GET", "/", &[]);
    assert_eq!(home.status, 200);
    assert!(home.header("content-security-policy").is_some());
    assert!(home.body.contains(r#"type="password""#));
    let look = |key: &str| {
        common::http_with_body(
            port,
            "POST",
            "/",
            &[("content-type", "application/x-www-form-urlencoded")],
            &format!("key={key}"),
        )
    };
    let page = look("consumer-key-one-0123456789");
    assert_eq!(page.status, 200, "{}", page.body);
    // The numbers of GetUsage, of this key.
    let today = chrono::DateTime::from_timestamp_nanos(plangate::clock::Clock::now(
        &plangate::clock::SystemClock,
    ))
    .date_naive()
    .to_string();
    let aws = common::http(
        p.admin,
        "GET",
        &format!("/usageplans/gold/usage?startDate={today}&endDate={today}&keyId=k1"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    let aws: serde_json::Value = serde_json::from_str(&aws.body).unwrap();
    let (used, remaining) = (&aws["values"]["k1"][0][0], &aws["values"]["k1"][0][1]);
    assert_eq!((used.as_u64(), remaining.as_u64()), (Some(3), Some(97)));
    assert!(
        page.body.contains(&format!(
            "<td>{today}</td><td>{used}</td><td>{remaining}</td>"
        )),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("97</span> of 100 requests remain"),
        "{}",
        page.body
    );
    assert!(page.body.contains("first-customer"));
    // Nothing of the other key, and never the key itself.
    assert!(!page.body.contains("k2") && !page.body.contains("second-customer"));
    assert!(
        !page.body.contains("consumer-key-one"),
        "the key shown back"
    );
    // A wrong key: refused, as plainly as a right one is answered.
    assert_eq!(look("no-such-key-0123456789").status, 403);
    // Per address: 20 lookups a minute, then refused unread (the right key too).
    let mut statuses: Vec<u16> = (0..20).map(|_| look("guess").status).collect();
    statuses.dedup();
    assert_eq!(statuses, [403, 429], "{statuses:?}");
    assert_eq!(look("consumer-key-one-0123456789").status, 429);
    // The key never reaches the log.
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("consumer page HTTP listening"), "{log}");
    assert!(!log.contains("consumer-key-one"), "a key in the log");
}

/// libfaketime (Debian `faketime`, installed by .ci/run).
fn libfaketime() -> String {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|a| format!("/usr/lib/{a}/faketime/libfaketime.so.1"))
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime (Debian package faketime; .ci/run installs it)")
}

#[test]
fn an_expired_session_leads_to_the_sign_in() {
    let plans = common::petstore("", &[("prod", "{}")], &[("gold", "")], &[]);
    let (dir, path) = common::plans_dir(plans);
    // The server's wall clock, moved forward by writing the offset to this file.
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0").unwrap();
    let lib = libfaketime();
    let p = Plangate::start_with_env(
        &path,
        &["--admin-token", TOKEN],
        &[
            ("LD_PRELOAD", &lib),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
        dir.path().join("plangate.log"),
    );
    let a = p.admin;
    let cookie = sign_in(a, &format!("token={TOKEN}"));
    let page = get(a, "/ui/keys", &cookie);
    assert_eq!(page.status, 200);
    let token = csrf(&page.body);
    // Seven hours on: still signed in.
    std::fs::write(&offset, "+7h").unwrap();
    assert_eq!(get(a, "/ui/keys", &cookie).status, 200);
    // Nine hours on (a session lasts eight): to the sign-in page; a change is refused.
    std::fs::write(&offset, "+9h").unwrap();
    let r = get(a, "/ui/keys", &cookie);
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/ui/signin");
    let r = form(
        a,
        "/ui/keys",
        Some(&cookie),
        &format!("csrf={token}&name=late"),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("sign in again"), "{}", r.body);
}

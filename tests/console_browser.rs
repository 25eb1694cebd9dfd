//! The console in a real headless Chromium (Debian's `chromium` + `chromium-driver`, Python
//! `selenium` from scripts/browser-venv.sh), in front of a real Envoy: sign in → create a key in
//! a plan → a request with it through Envoy shows in Live → the usage counts it → disable the
//! key → the next request through Envoy is 403 → sign out. axe-core (vendored) runs in every
//! page: no serious or critical violation; the browser logs no error; nothing is loaded from
//! another origin. Screenshots of every page at 1280×800 and 390×844 go to docs/ui/.

mod common;

use std::process::Command;

use common::{Stack, Succeeds};

const TOKEN: &str = "browser-token-0123456789abcdef";
const READ: (&str, &str) = ("AKIDBROWSERREAD", "browser-read-secret-0123456789");

#[test]
fn an_operator_session_in_chromium() {
    let python = {
        let out = Command::new(common::root().join("scripts/browser-venv.sh")).succeeds();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let plans = common::petstore(
        "",
        &[("prod", "{}")],
        &[(
            "gold",
            "throttle: { rate: 100, burst: 100 }, quota: { limit: 1000, period: DAY }",
        )],
        &[(
            "file-1",
            "browser-file-key-0123456789",
            "usage_plans: [gold], name: filekey",
        )],
    );
    let consumer = common::free_port();
    let (_creds, credentials) = common::file_in_new_dir(
        "credentials.csv",
        format!(
            "access_key_id,secret_access_key,role\n{},{},read\n",
            READ.0, READ.1
        ),
    );
    let s = Stack::start_custom(
        &plans,
        "ext_authz.yaml",
        &[
            "--admin-token".to_owned(),
            TOKEN.to_owned(),
            "--aws-credentials".to_owned(),
            credentials.to_str().unwrap().to_owned(),
            "--consumer-addr".to_owned(),
            format!("127.0.0.1:{consumer}"),
        ],
        &[],
    );
    let shots = common::root().join("docs/ui");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new(python)
        .arg(common::root().join("tests/fixtures/browser/console.py"))
        .arg(s.plangate_admin.to_string())
        .arg(s.listener.to_string())
        .arg(TOKEN)
        .arg(common::root().join("tests/fixtures/axe/axe.min.js"))
        .arg(&shots)
        .arg(consumer.to_string())
        .arg(READ.0)
        .arg(READ.1)
        .succeeds();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{v:#}");
    assert!(
        v["signin_url"].as_str().unwrap().ends_with("/ui/signin"),
        "{v}"
    );
    assert_eq!(v["value_length"], 40);
    // The Copy button answers (copied, or the value selected where the browser refuses).
    assert!(!v["copy_status"].as_str().unwrap_or("").is_empty(), "{v}");
    assert_eq!(
        v["envoy"]["admitted"],
        200,
        "{v}\n{}",
        s.log("plangate.log")
    );
    assert!(
        v["live_seconds"].is_number(),
        "the request never showed in Live: {v}"
    );
    let cells: Vec<&str> = v["usage_cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(cells.contains(&"1") && cells.contains(&"999"), "{cells:?}");
    assert_eq!(v["escaped_name"], true, "the name shown as text: {v}");
    assert_eq!(v["overview_nearest"], true, "the key on the overview: {v}");
    // A read session: the only button on its pages is Sign out's (outside main); every change
    // posted anyway is refused.
    for (page, buttons) in v["read_buttons"].as_object().unwrap() {
        assert_eq!(buttons, &serde_json::json!([]), "buttons on {page}");
    }
    assert_eq!(v["read_buttons"].as_object().unwrap().len(), 7);
    assert_eq!(v["read_posts"], serde_json::json!([403, 403, 403, 403]));
    assert_eq!(v["envoy"]["disabled"], 403, "{v}");
    assert!(v["after_signout"].as_str().unwrap().ends_with("/ui/signin"));
    assert!(
        v["after_signout_keys"]
            .as_str()
            .unwrap()
            .ends_with("/ui/signin")
    );
    for (page, violations) in v["pages"].as_object().unwrap() {
        assert_eq!(violations, &serde_json::json!([]), "axe on {page}");
    }
    assert_eq!(v["pages"].as_object().unwrap().len(), 15, "{v}");
    // A runtime plan made and edited from its form; its description shown as text.
    let made = v["plan_made"].as_str().unwrap();
    assert!(
        made.contains("Silver") && made.contains("500 per DAY"),
        "{made}"
    );
    assert!(made.contains("<em>for trials</em>"), "escaped: {made}");
    assert!(v["plan_edited"].as_str().unwrap().contains("700 per DAY"));
    // Another origin's form: refused, no key made.
    assert!(v["csrf_page"].as_str().unwrap().contains("CSRF"), "{v}");
    assert_eq!(v["csrf_keys"], 0);
    // The consumer page: today's row equals GetUsage for the key; the value never shown.
    let key_id = v["key_id"].as_str().unwrap();
    let today = v["consumer_cells"][0].as_str().unwrap();
    let aws = common::http(
        s.plangate_admin,
        "GET",
        &format!("/usageplans/gold/usage?startDate={today}&endDate={today}&keyId={key_id}"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    let aws: serde_json::Value = serde_json::from_str(&aws.body).unwrap();
    let day = &aws["values"][key_id][0];
    assert_eq!(
        v["consumer_cells"],
        serde_json::json!([today, day[0].to_string(), day[1].to_string()]),
        "{aws}"
    );
    assert_eq!(v["consumer_shows_value"], false);
    assert_eq!(v["explained"], "Decision: admitted", "{v}");
    assert_eq!(
        v["console"],
        serde_json::json!([]),
        "browser console errors"
    );
    assert_eq!(
        v["foreign"],
        serde_json::json!([]),
        "requests to other origins"
    );
    for page in v["pages"].as_object().unwrap().keys() {
        for size in ["desktop", "phone"] {
            assert!(shots.join(format!("{page}-{size}.png")).exists());
        }
    }
}

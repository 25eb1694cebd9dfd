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
    let s = Stack::start_custom(
        &plans,
        "ext_authz.yaml",
        &["--admin-token".to_owned(), TOKEN.to_owned()],
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
        .succeeds();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{v:#}");
    assert!(
        v["signin_url"].as_str().unwrap().ends_with("/ui/signin"),
        "{v}"
    );
    assert_eq!(v["value_length"], 40);
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
    assert_eq!(v["pages"].as_object().unwrap().len(), 10, "{v}");
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

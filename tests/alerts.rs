//! The alert rules, checked by Prometheus' own `promtool` (from scripts/promtool.sh): the
//! PrometheusRule of deploy/kubernetes/components/monitoring is valid and its alerts fire when
//! they should and only then (tests/fixtures/alerts); the rules in docs/operations.md are valid
//! and say what the PrometheusRule says.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool() -> PathBuf {
    let out = Command::new(root().join("scripts/promtool.sh"))
        .output()
        .expect("scripts/promtool.sh");
    assert!(
        out.status.success(),
        "scripts/promtool.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn promtool_in(dir: &Path, args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The PrometheusRule's `spec`: a Prometheus rules file.
fn prometheus_rule() -> Value {
    let text = std::fs::read_to_string(
        root().join("deploy/kubernetes/components/monitoring/prometheusrule.yaml"),
    )
    .unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(doc["kind"].as_str(), Some("PrometheusRule"));
    doc["spec"].clone()
}

/// The rules block of docs/operations.md (the fenced YAML that starts with `groups:`).
fn documented_rules() -> Value {
    let text = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let start = text
        .find("```yaml\ngroups:")
        .expect("docs/operations.md has a rules block")
        + "```yaml\n".len();
    let end = start + text[start..].find("```").unwrap();
    serde_yaml_ng::from_str(&text[start..end]).unwrap()
}

fn alerts(rules: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                rule["alert"].as_str().unwrap().to_owned(),
                rule["expr"].as_str().unwrap().trim().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn prometheus_rule_is_valid_and_its_alerts_fire_when_they_should() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        serde_yaml_ng::to_string(&prometheus_rule()).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        root().join("tests/fixtures/alerts/rules.test.yml"),
        dir.path().join("rules.test.yml"),
    )
    .unwrap();
    promtool_in(dir.path(), &["check", "rules", "rules.yml"]);
    promtool_in(dir.path(), &["test", "rules", "rules.test.yml"]);
}

#[test]
fn documented_rules_are_valid_and_match_the_prometheus_rule() {
    let dir = tempfile::tempdir().unwrap();
    let documented = documented_rules();
    std::fs::write(
        dir.path().join("rules.yml"),
        serde_yaml_ng::to_string(&documented).unwrap(),
    )
    .unwrap();
    promtool_in(dir.path(), &["check", "rules", "rules.yml"]);
    let shipped = alerts(&prometheus_rule());
    let mut shared = 0;
    for (name, expr) in alerts(&documented) {
        if let Some((_, e)) = shipped.iter().find(|(n, _)| *n == name) {
            assert_eq!(
                &expr, e,
                "{name}: docs/operations.md and the PrometheusRule differ"
            );
            shared += 1;
        }
    }
    assert!(shared >= 4, "only {shared} alerts in both");
}

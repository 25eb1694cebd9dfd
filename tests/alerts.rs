//! The alert rules, checked by Prometheus' own `promtool` (from scripts/promtool.sh): the
//! PrometheusRule of deploy/kubernetes/components/monitoring is valid and its alerts fire when
//! they should and only then (tests/fixtures/alerts); the rules in docs/operations.md are valid
//! and say what the PrometheusRule says.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Succeeds, root};
use serde_yaml_ng::Value;

fn promtool() -> PathBuf {
    let out = Command::new(root().join("scripts/promtool.sh")).succeeds();
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

/// The Grafana dashboard (deploy/grafana/plangate.json): every panel queries, every query is
/// PromQL that promtool accepts (Grafana's `$__rate_interval` and `$job` filled in), and every
/// plangate metric it reads is one plangate exports.
#[test]
fn the_dashboard_queries_metrics_that_exist() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/plangate.json")).unwrap(),
    )
    .unwrap();
    let exported = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let promql = expr
                .replace("$__rate_interval", "5m")
                .replace("\"$job\"", "\".*\"");
            assert!(!promql.contains('$'), "an unknown variable in {expr}");
            for name in promql
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("plangate_"))
            {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    exported.contains(&format!("\"{base}\"")),
                    "{} reads {name}, which plangate does not export",
                    p["title"]
                );
            }
            rules.push_str(&format!(
                "      - record: dashboard:query{n}\n        expr: '{}'\n",
                promql.replace('\'', "''")
            ));
            n += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    promtool_in(dir.path(), &["check", "rules", "dashboard.yml"]);
}

//! Every rejection rule of the configuration (docs/config.md) has a fixture under
//! tests/fixtures/invalid/ and a test on its message and position; no key value ever appears in
//! an error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Succeeds;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/invalid")
        .join(name)
}

/// Loads a fixture and returns its errors, one line each.
fn errors(name: &str) -> Vec<String> {
    match plangate::config::load_file(&fixture(name)) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts that some error is at `line` and contains every one of `parts`.
#[track_caller]
fn has(errors: &[String], line: usize, parts: &[&str]) {
    let at = format!(".yaml:{line}:");
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&at) && parts.iter().all(|p| e.contains(p))),
        "no error at line {line} with {parts:?} in:\n{}",
        errors.join("\n")
    );
}

#[test]
fn unknown_field() {
    let e = errors("unknown_field.yaml");
    assert_eq!(e.len(), 1);
    has(
        &e,
        7,
        &["unknown field `thrtle`", "expected one of `throttle`"],
    );
}

#[test]
fn duplicate_key_id() {
    let e = errors("duplicate_key_id.yaml");
    has(
        &e,
        13,
        &["duplicate API key id `acme`", "first at api_keys[0]"],
    );
}

#[test]
fn duplicate_plan_id() {
    let e = errors("duplicate_plan.yaml");
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("duplicate entry `gold`"), "{e:?}");
}

#[test]
fn plan_names_unknown_api() {
    has(
        &errors("unknown_api.yaml"),
        9,
        &["usage plan `gold` names unknown API `bookstore`"],
    );
}

#[test]
fn plan_names_unknown_stage() {
    has(
        &errors("unknown_stage.yaml"),
        9,
        &["unknown stage `staging` of API `petstore`"],
    );
}

#[test]
fn key_names_unknown_plan() {
    has(
        &errors("unknown_plan.yaml"),
        12,
        &["API key `acme` names unknown usage plan `platinum`"],
    );
}

#[test]
fn plan_throttles_unknown_method() {
    has(
        &errors("unknown_plan_method.yaml"),
        14,
        &["throttles `/pets/POST`", "does not list"],
    );
}

#[test]
fn key_in_two_plans_for_one_stage_names_both() {
    let e = errors("key_in_two_plans.yaml");
    assert_eq!(e.len(), 1, "{e:?}");
    has(
        &e,
        15,
        &[
            "`acme`",
            "`gold`",
            "`silver`",
            "petstore/prod",
            "at most one plan",
        ],
    );
}

#[test]
fn negative_limits() {
    let e = errors("negative_limits.yaml");
    assert_eq!(e.len(), 3, "{e:?}");
    has(&e, 3, &["account.throttle.rate", "-5"]);
    has(
        &e,
        8,
        &["throttle burst", "-1 is not a whole number from 0"],
    );
    has(
        &e,
        11,
        &["quota limit", "-100 is not a whole number from 0"],
    );
}

#[test]
fn non_finite_limits() {
    let e = errors("non_finite.yaml");
    assert_eq!(e.len(), 2, "{e:?}");
    has(&e, 6, &["throttle rate", "inf"]);
    has(&e, 8, &["throttle rate", "NaN"]);
}

#[test]
fn unknown_period() {
    has(
        &errors("unknown_period.yaml"),
        8,
        &["unknown variant `YEAR`", "`DAY`, `WEEK`, `MONTH`"],
    );
}

#[test]
fn two_keys_with_one_value() {
    let e = errors("same_value.yaml");
    assert_eq!(e.len(), 2, "{e:?}");
    // The second is given as a hash: values are compared by hash.
    has(&e, 13, &["`two` has the same value as API key `one`"]);
    has(&e, 16, &["`three` has the same value as API key `one`"]);
}

#[test]
fn short_key_value() {
    has(
        &errors("short_value.yaml"),
        3,
        &["`tiny`", "13 characters; 20 to 128 are required"],
    );
}

#[test]
fn value_and_hash_together_or_neither() {
    let e = errors("value_and_hash.yaml");
    has(&e, 3, &["`both`", "both `value` and `value_sha256`"]);
    has(&e, 6, &["`neither`", "neither `value` nor `value_sha256`"]);
}

#[test]
fn bad_templates() {
    let e = errors("bad_template.yaml");
    assert_eq!(e.len(), 3, "{e:?}");
    has(&e, 7, &["verb `get` must be upper case"]);
    has(&e, 8, &["greedy `{proxy+}` must be the last segment"]);
    has(&e, 10, &["conflicts with `/pets/{id}`"]);
}

#[test]
fn unsupported_version() {
    has(&errors("bad_version.yaml"), 1, &["unsupported version 2"]);
}

#[test]
fn every_error_of_a_file_is_listed() {
    let e = errors("many_errors.yaml");
    assert_eq!(e.len(), 4, "{e:?}");
    has(&e, 6, &["throttle rate"]);
    has(&e, 9, &["quota offset"]);
    has(&e, 11, &["unknown API `nope`"]);
    has(&e, 15, &["unknown usage plan `platinum`"]);
}

#[test]
fn rate_limit_service_errors_come_in_the_same_pass() {
    // They used to appear only once every other error was fixed.
    let e = errors("rls_and_other_errors.yaml");
    assert_eq!(e.len(), 4, "{e:?}");
    has(&e, 3, &["RLS domain", "must not be empty"]);
    has(
        &e,
        6,
        &["descriptor keys", "`key` names two parts of a request"],
    );
    has(&e, 11, &["throttle rate"]);
    has(&e, 15, &["unknown API `nope`"]);
}

#[test]
fn domain_name_errors_are_all_listed_with_their_positions() {
    let e = errors("domain_names.yaml");
    assert_eq!(e.len(), 10, "{e:?}");
    has(&e, 10, &["maps base path `v1` twice"]);
    has(
        &e,
        11,
        &["`/v2`: write a base path without slashes at its ends"],
    );
    has(&e, 12, &["unknown API `bookstore`"]);
    has(&e, 13, &["unknown stage `qa` of API `petstore`"]);
    has(&e, 15, &["maps base path `(none)` twice"]);
    has(&e, 16, &["a domain name has no port"]);
    has(&e, 18, &["`API.Example.com` is `api.example.com` again"]);
    has(&e, 20, &["a wildcard is only allowed as the first label"]);
    has(&e, 21, &["label `under_score`"]);
    has(&e, 24, &["`a//b` has an empty segment"]);
}

#[test]
fn csv_key_file_errors_name_file_and_line() {
    let e = errors("bad_csv.yaml");
    assert_eq!(e.len(), 1, "{e:?}");
    // Line 2; the cell is named by its column, never quoted (see below). The unknown `Colour`
    // column is ignored, as AWS ignores it.
    assert!(e[0].contains("bad_keys.csv:2:1"), "{e:?}");
    assert!(
        e[0].contains("the Enabled column must be TRUE or FALSE"),
        "{e:?}"
    );
    assert!(!e[0].contains("maybe"), "{e:?}");
}

#[test]
fn a_key_file_without_its_header_line_never_shows_a_key() {
    // The first line is a key row: its cells are taken for the header, and none may appear in an
    // error (they reach `validate`'s output and the body of a refused reload).
    let dir = tempfile::tempdir().unwrap();
    let secret = "acme-LEAKME-key-0123456789abcdef";
    std::fs::write(
        dir.path().join("keys.csv"),
        format!(
            "acme,{secret},first key,TRUE,gold\nbeta,beta-LEAKME-key-0123456789ab,,maybe,gold\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("plans.yaml");
    std::fs::write(
        &config,
        "version: 1\napis: { petstore: { stages: { prod: {} } } }\nusage_plans:\n  gold: { api_stages: [{ api: petstore, stage: prod }] }\napi_keys_files: [keys.csv]\n",
    )
    .unwrap();
    let errors = plangate::config::load_file(&config)
        .unwrap_err()
        .to_string();
    assert!(!errors.contains("LEAKME"), "{errors}");
    assert!(!errors.contains("maybe"), "{errors}");
    assert!(errors.contains("keys.csv:1:1"), "{errors}");
    assert!(errors.contains("is the header line missing?"), "{errors}");
    let out = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .arg("validate")
        .arg(&config)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(!all.contains("LEAKME"), "{all}");
}

#[test]
fn misplaced_value_is_not_quoted() {
    let e = errors("misplaced_value.yaml");
    has(
        &e,
        4,
        &["enabled", "invalid type: a string, expected a boolean"],
    );
}

/// The secrets written in the fixtures above.
const SECRETS: &[&str] = &[
    "same-secret-value-0123456789",
    "tiny-secret-9",
    "both-secret-value-0123456789",
    "csv-secret-key-0123456789",
    "leaky-secret-value-0123456789",
    "1234567890123456789012",
];

#[test]
fn no_key_value_in_any_error_or_log() {
    let bin = env!("CARGO_BIN_EXE_plangate");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let out = Command::new(bin)
            .arg("validate")
            .arg(&path)
            .env("PLANGATE_LOG", "trace")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} was accepted",
            path.display()
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for s in SECRETS {
            assert!(
                !text.contains(s),
                "{} leaks a key value:\n{text}",
                path.display()
            );
        }
        // The library's errors too, including their Debug form.
        let err = plangate::config::load_file(&path).unwrap_err();
        let debug = format!("{err:?}");
        for s in SECRETS {
            assert!(!debug.contains(s), "{} leaks via Debug", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} fixtures");
}

#[test]
fn validate_exits_zero_on_the_example() {
    let bin = env!("CARGO_BIN_EXE_plangate");
    Command::new(bin)
        .arg("validate")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/plans.example.yaml"))
        .succeeds();
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    // 64k levels of `[` took the YAML parser tens of seconds; refused by a scan now.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\napis: {}{}\n",
            "[".repeat(65_536),
            "]".repeat(65_536)
        ),
    )
    .unwrap();
    let e: Vec<String> = match plangate::config::load_file(&path) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    };
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("deep.yaml:2:71"), "{e:?}");
    assert!(e[0].contains("nested more than 64 deep"), "{e:?}");
}

/// A key file as AWS's `import-api-keys` reads it (docs: "API Gateway API key file format").
fn load_key_file(csv: &str) -> Result<plangate::config::Compiled, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.csv"), csv).unwrap();
    let config = dir.path().join("plans.yaml");
    std::fs::write(
        &config,
        "version: 1\napis: { petstore: { stages: { prod: {}, beta: {} } } }\nusage_plans:\n  gold: { api_stages: [{ api: petstore, stage: prod }] }\n  free: { api_stages: [{ api: petstore, stage: beta }] }\napi_keys_files: [keys.csv]\n",
    )
    .unwrap();
    plangate::config::load_file(&config).map_err(|e| e.to_string())
}

#[test]
fn aws_key_files_load_as_aws_reads_them() {
    let one = "apikey1234abcdefghij0123456789";
    let two = "apikey1234abcdefghij0123456780";
    let three = "apikey1234abcdefghij0123456781";
    // Plan lists in double or single quotes; unknown columns ignored (with a warning naming
    // their position); headers in any case and order.
    let c = load_key_file(&format!(
        "Enabled,Name,key,UsageplanIds,Colour\ntrue,first,{one},\"gold,free\",red\ntrue,second,{two},'gold,free',blue\nfalse,third,{three},'free',green\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    fn plans_of(c: &plangate::config::Compiled, value: &str) -> (Vec<String>, bool) {
        let k = c
            .snapshot
            .key_by_hash(&plangate::snapshot::hash_key(value))
            .unwrap();
        let mut p: Vec<String> = k
            .plans
            .iter()
            .map(|&i| c.snapshot.plans[i as usize].id.to_string())
            .collect();
        p.sort();
        (p, k.enabled)
    }
    let plans = |v: &str| plans_of(&c, v);
    assert_eq!(
        plans(one),
        (vec!["free".to_owned(), "gold".to_owned()], true)
    );
    assert_eq!(
        plans(two),
        (vec!["free".to_owned(), "gold".to_owned()], true)
    );
    assert_eq!(plans(three), (vec!["free".to_owned()], false));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("column(s) 5 of the header line")),
        "{:?}",
        c.warnings
    );
    assert!(!c.warnings.iter().any(|w| w.contains("Colour")));

    // Name is required, as Key is.
    let e = load_key_file(&format!("Key,Enabled\n{one},TRUE\n")).unwrap_err();
    assert!(e.contains("no `Name` column"), "{e}");

    // The same key twice: the later row wins, with a warning naming both lines (not the value).
    let c = load_key_file(&format!(
        "Name,Key,UsagePlanIds\nold,{one},gold\nnew,{one},free\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.snapshot.keys.len(), 1);
    assert_eq!(plans_of(&c, one).0, vec!["free".to_owned()]);
    let w = c.warnings.join("\n");
    assert!(w.contains("keys.csv:3: the key of line 2 again"), "{w}");
    assert!(!w.contains(one), "{w}");
}

/// A file that fails for one reason gets exactly that error: every other field, however new,
/// is read through the file types (the collector keeps no list of field names that could drift).
#[test]
fn only_the_wrong_field_is_reported() {
    let e = errors("every_field_known.yaml");
    assert_eq!(e.len(), 1, "{e:#?}");
    has(&e, 15, &["unknown variant `DAYS`"]);
}

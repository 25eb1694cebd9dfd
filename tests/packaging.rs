//! The container build: no Docker engine runs here, so what can be checked without one is.

use std::path::Path;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// Paths the build stage copies into the image (`COPY a b ./dest` → a, b).
fn copied(dockerfile: &str) -> Vec<String> {
    // The text after the first `FROM` and before the second: the build stage.
    let build_stage = dockerfile.split("\nFROM ").nth(1).unwrap_or("");
    build_stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len().saturating_sub(1)]
                .iter()
                .map(|p| p.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_image_build_copies_every_file_the_manifest_names() {
    let manifest = read("Cargo.toml");
    let copied = copied(&read("Dockerfile"));
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "src".to_owned(),
    ];
    // Cargo resolves every declared target when it reads the manifest, even for `cargo build`.
    for (section, dir) in [
        ("[[bench]]", "benches"),
        ("[[test]]", "tests"),
        ("[[example]]", "examples"),
    ] {
        if manifest.contains(section) {
            needed.push(dir.to_owned());
        }
    }
    if Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("build.rs")
        .exists()
    {
        needed.push("build.rs".to_owned());
    }
    // What build.rs reads.
    if Path::new(env!("CARGO_MANIFEST_DIR")).join("proto").is_dir() {
        needed.push("proto".to_owned());
    }
    for n in &needed {
        assert!(
            copied.contains(n),
            "the Dockerfile's build stage does not copy `{n}` (copies {copied:?})"
        );
    }
}

#[test]
fn the_image_checks_its_health_and_leaves_local_state_out() {
    let dockerfile = read("Dockerfile");
    let runtime = dockerfile.split("\nFROM ").nth(2).unwrap_or("");
    assert!(
        runtime.contains(r#"HEALTHCHECK"#) && runtime.contains(r#""plangate", "health""#),
        "the runtime image has no HEALTHCHECK with `plangate health`"
    );
    // A minimal base, run as a non-root user.
    assert!(runtime.starts_with("gcr.io/distroless/"), "{runtime}");
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime image sets USER");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "USER {user}"
    );
    let ignore = read(".dockerignore");
    for path in ["target/", ".venv/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == path),
            ".dockerignore lacks {path}"
        );
    }
    // Compose publishes the admin address (so it must listen beyond loopback) and checks health.
    let compose: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("docker-compose.yml")).unwrap();
    let p = &compose["services"]["plangate"];
    let command: Vec<&str> = p["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let admin = command
        .iter()
        .position(|a| *a == "--admin-addr")
        .map(|i| command[i + 1])
        .expect("--admin-addr in compose");
    assert!(admin.starts_with("0.0.0.0:"), "{admin}");
    assert!(p["ports"].as_sequence().is_some_and(|s| !s.is_empty()));
    assert_eq!(p["healthcheck"]["test"][1], "plangate");
    // The license, in the repository and the manifest.
    assert!(read("LICENSE").contains("Apache License"));
    assert!(read("Cargo.toml").contains("license = \"Apache-2.0\""));
}

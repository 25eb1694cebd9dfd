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

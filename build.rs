//! Generates plangate's own gRPC API (proto/plangate/v1/management.proto) at build time.
//!
//! The .proto files are compiled by protox, a protobuf compiler written in Rust, so that a fresh
//! clone builds with `cargo build` alone: no system `protoc` to install, and no generated code in
//! the repository. The encoded descriptor set is written next to the code for gRPC server
//! reflection. (Envoy's APIs come generated from the `envoy-types` crate.)
//!
//! It also names the source revision for `plangate_build_info`: `PLANGATE_REVISION` when set (an
//! image build has no `.git`), else git's `HEAD`, else `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;

const PROTOS: &[&str] = &["proto/plangate/v1/management.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let revision = std::env::var("PLANGATE_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rerun-if-env-changed=PLANGATE_REVISION");
    println!("cargo:rustc-env=PLANGATE_REVISION={}", revision.trim());
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("plangate_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

/// `HEAD`'s commit (12 hex digits), and a rerun when it moves; `None` outside a git checkout.
fn git_head() -> Option<String> {
    let head = Path::new(".git/HEAD");
    if !head.is_file() {
        return None;
    }
    // Only files that exist: a missing one would rerun this script on every build.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Some(reference) = std::fs::read_to_string(head)
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_owned()))
    {
        for f in [format!(".git/{reference}"), ".git/packed-refs".to_owned()] {
            if Path::new(&f).is_file() {
                println!("cargo:rerun-if-changed={f}");
            }
        }
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let rev = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !rev.trim().is_empty()).then(|| rev.trim().to_owned())
}

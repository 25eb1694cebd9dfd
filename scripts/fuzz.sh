#!/usr/bin/env bash
# Long fuzz passes over the ext_authz and RLS handlers and the YAML/CSV loaders (tests/fuzz.rs),
# on stable Rust (proptest). A failure is shrunk to a small case and kept in
# tests/fuzz.proptest-regressions, which every later run (and the test suite) replays first.
# Usage: scripts/fuzz.sh [CASES_PER_TARGET]    (default 100000; the test suite runs 200)
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
echo "fuzzing: $cases cases per target (release build)"
PLANGATE_FUZZ_CASES="$cases" cargo test --release --test fuzz -- --nocapture

#!/usr/bin/env bash
# The project's test command: every unit, property, integration and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets "$@"

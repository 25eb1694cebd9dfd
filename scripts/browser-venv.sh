#!/usr/bin/env bash
# The console's browser tests (tests/console_browser.rs): Python `selenium` in a project-local
# venv (.venv/browser), once; prints the venv's python. The browser is Debian's `chromium` with
# `chromium-driver` (.ci/run installs them); axe-core is vendored (tests/fixtures/axe/).
set -euo pipefail
venv="$("$(dirname "$0")/pip-venv.sh" browser "selenium>=4.20")"
echo "$venv/bin/python"

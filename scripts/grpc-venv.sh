#!/usr/bin/env bash
# Installs a Python gRPC client that knows no plangate types — grpcio, grpcio-reflection and
# protobuf from PyPI — into a project-local venv (.venv/grpc), once, and prints its python.
# The reflection test (tests/reflection.rs) uses it to discover and call the management API.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv/grpc"
stamp="$venv/.installed-1"
if [ ! -f "$stamp" ]; then
  mkdir -p "$root/.venv"
  exec 9>"$root/.venv/grpc.lock"
  flock 9
  if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "grpcio>=1.60" "grpcio-reflection>=1.60" "protobuf>=4.25" >&2
    touch "$stamp"
  fi
  flock -u 9
fi
echo "$venv/bin/python"

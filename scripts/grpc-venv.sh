#!/usr/bin/env bash
# Installs a Python gRPC client that knows no plangate types — grpcio, grpcio-reflection and
# protobuf from PyPI — into a project-local venv (.venv/grpc), once, and prints its python.
# The reflection test (tests/reflection.rs) uses it to discover and call the management API.
set -euo pipefail
venv="$("$(dirname "$0")/pip-venv.sh" grpc "grpcio>=1.60" "grpcio-reflection>=1.60" "protobuf>=4.25")"
echo "$venv/bin/python"

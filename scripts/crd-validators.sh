#!/usr/bin/env bash
# Installs the custom resources' schema validators the manifest tests use into a project-local
# directory (.venv/npm-crd), once, and prints it: the generated models of kubernetes-models (npm
# @kubernetes-models/*, MIT) for Gateway API, Envoy Gateway, the Prometheus Operator,
# cert-manager and Istio, and `yaml`. Run by tests/fixtures/k8s/validate-crds.mjs with Node.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/.venv/npm-crd"
packages=(@kubernetes-models/istio@3.0.1 @kubernetes-models/cert-manager@6.0.0
  @kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/gateway-api@2.0.0
  @kubernetes-models/envoy-gateway@2.0.0 yaml@2.8.1)
stamp="$dir/.installed-$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  mkdir -p "$dir"
  exec 9>"$root/.venv/npm-crd.lock"
  flock 9
  if [ ! -f "$stamp" ]; then
    echo '{"private": true}' > "$dir/package.json"
    (cd "$dir" && npm install --silent --no-audit --no-fund --ignore-scripts "${packages[@]}") >&2
    touch "$stamp"
  fi
  flock -u 9
fi
echo "$dir"

#!/usr/bin/env bash
# The local demo: Envoy 1.40 (from PyPI) → plangate ext_authz → an echo upstream, all on
# loopback, on the embedded example plans. Shows 200, 403 and 429 answers with curl, then stops.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

echo "== building plangate (release)"
cargo build --release --quiet
echo "== installing Envoy (first run only)"
envoy="$(scripts/envoy.sh)"
"$envoy" --version 2>&1 | grep -m1 version || true

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

python3 scripts/echo-upstream.py 8080 & pids+=($!)
target/release/plangate serve --config envoy/plans.example.yaml --grpc-addr 127.0.0.1:50051 --data-dir "$work/data" \
  2>"$work/plangate.log" & pids+=($!)
"$envoy" -c envoy/ext_authz.yaml --log-level warn 2>"$work/envoy.log" & pids+=($!)

ready=""
for _ in $(seq 1 100); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:10000/health)" = 200 ]; then
    ready=1; break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "the stack did not come up; logs:" >&2
  cat "$work/plangate.log" "$work/envoy.log" >&2
  exit 1
fi

show() {
  local title="$1"; shift
  echo
  echo "== $title"
  echo "\$ curl $*"
  curl -s -i "$@" | grep -iE '^(HTTP/|x-amzn-errortype|retry-after|ratelimit|x-ratelimit|x-quota|\{)' || true
}

ACME=acme-prod-key-0123456789abcdef
FREE=free-tier-key-0123456789abcdef
show "200: a valid key (the upstream sees x-plangate-* headers)" -H "x-api-key: $ACME" http://127.0.0.1:10000/pets/42
show "200: a keyless method" http://127.0.0.1:10000/health
show "403: no key" http://127.0.0.1:10000/pets
show "403: an unknown key" -H "x-api-key: nobody-knows-this-key-000" http://127.0.0.1:10000/pets
show "403: an unknown method (unknown_methods: forbid)" -H "x-api-key: $ACME" http://127.0.0.1:10000/nowhere
echo
echo "== 429: the free plan's burst is 5; the 6th request at once is throttled"
for i in 1 2 3 4 5 6; do
  printf 'request %s: ' "$i"
  curl -s -o /dev/null -w '%{http_code}\n' -H "x-api-key: $FREE" http://127.0.0.1:10000/pets/1
done
show "429 body and headers" -H "x-api-key: $FREE" http://127.0.0.1:10000/pets/1
echo
echo "demo done (logs were in $work)"

#!/usr/bin/env bash
# Soak: hold half of plangate's measured capacity for a while and report drift in resident
# memory and latency (docs/benchmarks.md). Server pinned to core 0, load to core 1 when there
# are two cores.
# Usage: scripts/soak.sh [MINUTES]    (default 30)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
minutes="${1:-30}"
work="$(mktemp -d)"
pg=""
cleanup() { [ -n "$pg" ] && kill "$pg" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release --quiet
python3 scripts/gen-keys.py 1000 "$work/k" --high-limits >/dev/null
srv=(); gen=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then srv=(taskset -c 0); gen=(taskset -c 1); fi
"${srv[@]}" target/release/plangate serve --config "$work/k/keys.yaml" --grpc-addr 127.0.0.1:50095 \
  --admin-addr 127.0.0.1:9195 --no-persist 2>"$work/plangate.log" & pg=$!
sleep 1
capacity=$("${gen[@]}" target/release/plangate bench --api check --target 127.0.0.1:50095 --duration 5 \
  --rounds 1 --keys 1000 --connections 2 --concurrency 32 --json | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["requests_per_second"]))')
rate=$((capacity / 2))
echo "capacity ~${capacity} calls/s; holding ${rate} calls/s for ${minutes} min"
echo "minute,rss_kib,p50_us,p99_us,p999_us,calls_per_s,errors"
for m in $(seq 1 "$minutes"); do
  out=$("${gen[@]}" target/release/plangate bench --api check --target 127.0.0.1:50095 --duration 60 \
    --warmup 0 --rounds 1 --keys 1000 --connections 2 --concurrency 32 --rate "$rate" --json)
  rss=$(awk '/VmRSS/{print $2}' "/proc/$pg/status")
  python3 - "$m" "$rss" "$out" <<'PY'
import json, sys
m, rss, t = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
l = t["latency_us"]
print(f'{m},{rss},{l["p50"]},{l["p99"]},{l["p999"]},{t["requests_per_second"]:.0f},{t["errors"]}')
PY
done

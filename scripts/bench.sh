#!/usr/bin/env bash
# plangate's benchmarks, all measured in one run on this machine (docs/benchmarks.md):
#   1. criterion: one engine decision; snapshot compile for 10k/100k/1M keys
#   2. 1M-key load: time and peak RSS (`plangate validate`, CSV and YAML)
#   3. gRPC: `plangate bench` Check and RLS against plangate and the baseline server, in
#      alternating rounds, with each server's CPU time per request
#   4. Envoy: wrk through Envoy without ext_authz, with plangate ext_authz, with plangate RLS
# Usage: scripts/bench.sh [--quick]    (quick: shorter runs, no criterion)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
quick=""; [ "${1:-}" = "--quick" ] && quick=1
dur=5; rounds=3; wrk_dur=10
[ -n "$quick" ] && { dur=2; rounds=2; wrk_dur=4; }

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "## machine"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; $(uname -r)"
echo
cargo build --release --quiet

if [ -z "$quick" ]; then
  echo "## criterion"
  cargo bench --quiet --bench engine 2>/dev/null | grep -E "^engine|time:" || true
  cargo bench --quiet --bench compile 2>/dev/null | grep -E "keys|time:" || true
  echo
fi

echo "## 1,000,000 keys: load (parse + compile), release build"
python3 scripts/gen-keys.py 1000000 "$work/big"
for f in keys-csv.yaml keys.yaml; do
  /usr/bin/time -f "$f: %e s, peak RSS %M KiB" target/release/plangate validate "$work/big/$f" >/dev/null
done 2>&1
echo

echo "## gRPC: plangate vs the baseline server (same client, alternating rounds)"
python3 scripts/gen-keys.py 10000 "$work/bk" --high-limits
target/release/plangate serve --config "$work/bk/keys.yaml" --grpc-addr 127.0.0.1:50071 \
  --admin-addr 127.0.0.1:9171 --data-dir "$work/data" 2>"$work/plangate.log" & pg=$!; pids+=($pg)
target/release/plangate baseline --grpc-addr 127.0.0.1:50072 2>"$work/baseline.log" & bl=$!; pids+=($bl)
sleep 1
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
for api in check rls; do
  c0=$(cpu $pg); b0=$(cpu $bl)
  target/release/plangate bench --api $api --target 127.0.0.1:50071 --baseline 127.0.0.1:50072 \
    --duration $dur --rounds $rounds --keys 10000 --json > "$work/$api.json"
  c1=$(cpu $pg); b1=$(cpu $bl)
  python3 - "$work/$api.json" "$api" $((c1 - c0)) $((b1 - b0)) "$tick" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); api = sys.argv[2]
pg_ticks, bl_ticks, tick = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# CPU includes warm-up requests too; count them as the measured rate times the warm-up.
pg_req = sum(t["requests"] * (1 + 1 / t["seconds"]) for _, t in r["rounds"])
bl_req = sum(b["requests"] * (1 + 1 / b["seconds"]) for b, _ in r["rounds"])
for i, (b, t) in enumerate(r["rounds"], 1):
    for name, x in (("baseline", b), ("plangate", t)):
        l = x["latency_us"]
        print(f"{api} round {i} {name:8} {x['requests_per_second']:9.0f} req/s  p50 {l['p50']} µs  p90 {l['p90']} µs  p99 {l['p99']} µs  p99.9 {l['p999']} µs  errors {x['errors']}")
print(f"{api}: median baseline {r['baseline_rps_median']:.0f} req/s, plangate {r['target_rps_median']:.0f} req/s, ratio {r['ratio']:.3f}")
print(f"{api}: server CPU per request: plangate {pg_ticks / tick / pg_req * 1e6:.1f} µs, baseline {bl_ticks / tick / bl_req * 1e6:.1f} µs")
PY
done
kill $pg $bl; wait $pg $bl 2>/dev/null || true
echo

echo "## Envoy end to end (wrk, 2 threads, 32 connections, ${wrk_dur}s each)"
if ! command -v wrk >/dev/null; then
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi
envoy="$(scripts/envoy.sh)"
target/release/plangate serve --config "$work/bk/keys.yaml" --grpc-addr 127.0.0.1:50051 \
  --admin-addr 127.0.0.1:9172 --data-dir "$work/data2" 2>"$work/plangate2.log" & pids+=($!)
sleep 1
run_envoy() {
  local name="$1" cfg="$2" hdr="$3"
  "$envoy" -c "$cfg" --log-level error --concurrency 1 2>"$work/envoy-$name.log" & local e=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:10000/pets" && break; sleep 0.1; done
  local rps
  rps=$(wrk -t2 -c32 -d"${wrk_dur}s" --latency -H "x-api-key: $hdr" http://127.0.0.1:10000/pets \
    | tee "$work/wrk-$name.txt" | awk '/Requests\/sec/{print $2}')
  local p50 p99 non2xx
  p50=$(awk '/ 50%/{print $2}' "$work/wrk-$name.txt"); p99=$(awk '/ 99%/{print $2}' "$work/wrk-$name.txt")
  non2xx=$(awk '/Non-2xx/{print $NF}' "$work/wrk-$name.txt"); non2xx=${non2xx:-0}
  echo "$name: $rps req/s, p50 $p50, p99 $p99, non-2xx $non2xx"
  kill $e; wait $e 2>/dev/null || true
  echo "$rps" > "$work/rps-$name"
}
# The shipped configs, with Envoy answering 200 itself (direct_response) instead of proxying to
# an upstream, so that the upstream is not what is measured; the filters run as shipped.
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
direct = 'direct_response: { status: 200, body: { inline_string: "ok" } }'
for name in ("ext_authz", "ratelimit"):
    s = open(f"envoy/{name}.yaml").read().replace("route: { cluster: upstream }", direct)
    open(f"{w}/{name}.yaml", "w").write(s)
    # The same, calling the baseline server instead of plangate.
    open(f"{w}/{name}-baseline.yaml", "w").write(s.replace("port_value: 50051", "port_value: 50052"))
    if name == "ext_authz":
        start = s.index("                  - name: envoy.filters.http.ext_authz")
        end = s.index("                  - name: envoy.filters.http.router")
        open(f"{w}/plain.yaml", "w").write(s[:start] + s[end:])
PY
target/release/plangate baseline --grpc-addr 127.0.0.1:50052 2>"$work/baseline2.log" & pids+=($!)
sleep 0.5
run_envoy plain "$work/plain.yaml" bench-key-000000000001
run_envoy ext_authz-baseline "$work/ext_authz-baseline.yaml" bench-key-000000000001
run_envoy ext_authz "$work/ext_authz.yaml" bench-key-000000000001
run_envoy ratelimit-baseline "$work/ratelimit-baseline.yaml" bench-key-000000000001
run_envoy ratelimit "$work/ratelimit.yaml" bench-key-000000000001
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
names = ("plain", "ext_authz-baseline", "ext_authz", "ratelimit-baseline", "ratelimit")
r = {n: float(open(f"{w}/rps-{n}").read()) for n in names}
print(f"ratios to Envoy without a filter: ext_authz {r['ext_authz'] / r['plain']:.3f} (baseline server {r['ext_authz-baseline'] / r['plain']:.3f}), "
      f"ratelimit {r['ratelimit'] / r['plain']:.3f} (baseline server {r['ratelimit-baseline'] / r['plain']:.3f})")
print(f"plangate vs the baseline server behind the same filter: ext_authz {r['ext_authz'] / r['ext_authz-baseline']:.3f}, ratelimit {r['ratelimit'] / r['ratelimit-baseline']:.3f}")
PY

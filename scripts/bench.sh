#!/usr/bin/env bash
# plangate's benchmarks, all measured in one run on this machine (docs/benchmarks.md):
#   1. criterion: one engine decision; snapshot compile for 10k/100k/1M keys
#   2. 1M-key load: time and peak RSS (`plangate validate`, CSV and YAML)
#   3. gRPC: `plangate bench` Check and RLS against plangate and the baseline server, in
#      alternating rounds, with each server's CPU time per request
#   4. Envoy: wrk through Envoy without ext_authz, with plangate ext_authz, with plangate RLS
# and, first, the counts that do not move with the host: allocations per call (benches/alloc.rs)
# and, without --quick, instructions per call (scripts/bench-instructions.sh, valgrind) and
# allocations and memcpy/memmove copies per call (scripts/bench-attribution.sh).
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

# Allocations per answer: a figure that does not move with the host (benches/alloc.rs).
echo "## allocations per call, plangate vs the empty handler"
cargo bench --quiet --bench alloc 2>/dev/null | grep -E "^\||allocations" || true
echo
if [ -z "$quick" ] && command -v valgrind >/dev/null; then
  echo "## instructions per call (callgrind, server thread), plangate vs the empty handler"
  scripts/bench-instructions.sh 1000
  echo
  echo "## allocations and copies per call by crate (valgrind dhat), plangate vs the empty handler"
  echo "## (totals here; scripts/bench-attribution.sh prints them per crate and function)"
  scripts/bench-attribution.sh 500 | grep -E "^## |allocations per call$|^copies per call"
  echo
fi

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

echo "## gRPC: plangate vs the empty handler (plangate-baseline), one run"
# The table of docs/benchmarks.md: for Check and ShouldRateLimit, calls/s (2 connections × 32 in
# flight, 1,000 keys, every request admitted and charged: 5 limits + usage), server CPU per call
# (/proc/PID/stat), and the p50 latency added with 1 call in flight; unpinned, then pinned (both
# servers on core 0, the load generator on core 1: the steadiest figure on shared machines).
python3 scripts/gen-keys.py 1000 "$work/bk" --high-limits
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
grpc_table() { # mode: unpinned | pinned
  local mode="$1" srv=() gen=()
  [ "$mode" = pinned ] && { srv=(taskset -c 0); gen=(taskset -c 1); }
  "${srv[@]}" target/release/plangate serve --config "$work/bk/keys.yaml" --grpc-addr 127.0.0.1:50071 \
    --admin-addr 127.0.0.1:9171 --no-persist 2>"$work/plangate-$mode.log" & local pg=$!; pids+=($pg)
  "${srv[@]}" target/release/plangate-baseline --grpc-addr 127.0.0.1:50072 2>"$work/baseline-$mode.log" & local bl=$!; pids+=($bl)
  sleep 1
  for api in check rls; do
    local c0 b0 c1 b1
    c0=$(cpu $pg); b0=$(cpu $bl)
    "${gen[@]}" target/release/plangate bench --api $api --target 127.0.0.1:50071 --baseline 127.0.0.1:50072 \
      --duration $dur --rounds $rounds --keys 1000 --connections 2 --concurrency 32 --json > "$work/$mode-$api.json"
    c1=$(cpu $pg); b1=$(cpu $bl)
    "${gen[@]}" target/release/plangate bench --api $api --target 127.0.0.1:50071 --baseline 127.0.0.1:50072 \
      --duration 2 --warmup 0.5 --rounds $rounds --keys 1000 --connections 1 --concurrency 1 --json > "$work/$mode-$api-p50.json"
    echo "$((c1 - c0)) $((b1 - b0))" > "$work/$mode-$api.cpu"
  done
  kill $pg $bl; wait $pg $bl 2>/dev/null || true
}
grpc_table unpinned
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then grpc_table pinned; fi
python3 - "$work" "$tick" <<'PY'
import json, os, statistics, sys
w, tick = sys.argv[1], int(sys.argv[2])
print("| | empty handler | plangate | ratio |")
print("|---|---|---|---|")
for mode in ("unpinned", "pinned"):
    for api, name in (("check", "Check"), ("rls", "ShouldRateLimit")):
        f = f"{w}/{mode}-{api}.json"
        if not os.path.exists(f):
            continue
        r = json.load(open(f))
        pg_ticks, bl_ticks = map(int, open(f"{w}/{mode}-{api}.cpu").read().split())
        # CPU includes each round's warm-up second: count it at the measured rate.
        n_pg = sum(t["requests"] * (1 + 1 / t["seconds"]) for _, t in r["rounds"])
        n_bl = sum(b["requests"] * (1 + 1 / b["seconds"]) for b, _ in r["rounds"])
        cpu_pg, cpu_bl = pg_ticks / tick / n_pg * 1e6, bl_ticks / tick / n_bl * 1e6
        p = json.load(open(f"{w}/{mode}-{api}-p50.json"))
        p50_bl = statistics.median(b["latency_us"]["p50"] for b, _ in p["rounds"])
        p50_pg = statistics.median(t["latency_us"]["p50"] for _, t in p["rounds"])
        print(f"| {name}, {mode}: calls/s | {r['baseline_rps_median']:.0f} | {r['target_rps_median']:.0f} | **{r['ratio']:.3f}** |")
        print(f"| {name}, {mode}: server CPU per call | {cpu_bl:.1f} µs | {cpu_pg:.1f} µs | **{cpu_pg / cpu_bl:.2f}×** |")
        print(f"| {name}, {mode}: unloaded p50 (1 call in flight) | {p50_bl:.0f} µs | {p50_pg:.0f} µs | +{p50_pg - p50_bl:.0f} µs |")
PY
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
target/release/plangate-baseline --grpc-addr 127.0.0.1:50052 2>"$work/baseline2.log" & pids+=($!)
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

echo
echo "## The runtime catalog: keys created per second, propagation, Check with runtime vs file keys"
# Its own servers (the ones above are stopped first, so that nothing overlaps a measurement).
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
if [ -n "$quick" ]; then scripts/bench-catalog.sh 100000 "$dur" "$rounds"
else scripts/bench-catalog.sh 1000000 "$dur" "$rounds"; fi

echo
echo "## The console: server time per page at a million keys, against 10,000"
if [ -n "$quick" ]; then scripts/bench-console.sh 100000 10 10000
else scripts/bench-console.sh 1000000 30 10000; fi

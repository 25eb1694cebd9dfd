#!/usr/bin/env bash
# What the watcher cap (--max-watchers, default 4) holds for the data plane (issue 25, item 9;
# docs/benchmarks.md): one plangate, Check load as fast as answered (`plangate bench`, 10,000
# keys, all admitted), alternating rounds without watchers and with ATTEMPTS `plangate watch`
# clients trying to attach (those past the cap are refused at once); throughput and plangate's
# CPU time per request, medians compared. Usage: scripts/bench-watchers-cap.sh [ROUNDS] [SECONDS] [ATTEMPTS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rounds="${1:-3}"; dur="${2:-5}"; attempts="${3:-200}"
work="$(mktemp -d)"
pids=(); watchers=()
cleanup() {
  for p in "${watchers[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --quiet
bin=target/release/plangate
python3 scripts/gen-keys.py 10000 "$work/k" --high-limits >/dev/null
$bin serve --config "$work/k/keys.yaml" --grpc-addr 127.0.0.1:50083 --admin-addr 127.0.0.1:9183 \
  --no-persist --admin-token bench-token --max-watchers "${MAX_WATCHERS:-4}" 2>"$work/serve.log" & pg=$!; pids+=($pg)
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:9183/readyz && break; sleep 0.1; done
cpu() { awk '{print $14 + $15}' "/proc/$pg/stat"; }
tick=$(getconf CLK_TCK)
load() { # → "requests/s  µs of plangate CPU per request"
  local c0 c1 out
  c0=$(cpu)
  out=$($bin bench --api check --target 127.0.0.1:50083 --duration "$dur" --warmup 1 --keys 10000 \
    --connections 2 --concurrency 32 --json)
  c1=$(cpu)
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); ticks, tick = int(sys.argv[2]), int(sys.argv[3])
n = r["requests"] * (1 + 1.0 / r["seconds"])   # CPU includes the warm-up second
print(r["requests_per_second"], ticks / tick / n * 1e6)' "$out" $((c1 - c0)) "$tick"
}
without=(); with=(); cpu_a=(); cpu_b=()
for i in $(seq 1 "$rounds"); do
  read -r a ca < <(load)
  watchers=()
  for _ in $(seq 1 "$attempts"); do
    PLANGATE_ADMIN_TOKEN=bench-token $bin watch --admin http://127.0.0.1:9183 >/dev/null 2>>"$work/refused.log" &
    watchers+=($!)
  done
  sleep 2
  alive=0; for w in "${watchers[@]}"; do kill -0 "$w" 2>/dev/null && alive=$((alive + 1)); done
  read -r b cb < <(load)
  for w in "${watchers[@]}"; do kill "$w" 2>/dev/null || true; done; wait "${watchers[@]}" 2>/dev/null || true
  watchers=()
  without+=("$a"); with+=("$b"); cpu_a+=("$ca"); cpu_b+=("$cb")
  printf 'round %d: no watchers %8.0f req/s %5.1f µs CPU/req; %d attempted, %d attached: %8.0f req/s %5.1f µs CPU/req\n' \
    "$i" "$a" "$ca" "$attempts" "$alive" "$b" "$cb"
done
echo "refusals seen by the clients: $(grep -c -i 'exhausted\|max-watchers' "$work/refused.log" || true)"
python3 - "${without[*]}" "${with[*]}" "${cpu_a[*]}" "${cpu_b[*]}" <<'PY'
import statistics, sys
m = lambda i: statistics.median(float(x) for x in sys.argv[i].split())
a, b, ca, cb = m(1), m(2), m(3), m(4)
print(f"median throughput: without {a:.0f} req/s, with the attempts {b:.0f} req/s; ratio {b / a:.3f}")
print(f"median plangate CPU per request: without {ca:.1f} µs, with {cb:.1f} µs; ratio {cb / ca:.3f}")
PY

#!/usr/bin/env bash
# What a WatchDecisions watcher costs the requests being decided (docs/benchmarks.md): one
# plangate, one load (`plangate bench`, Check, 10,000 keys, all admitted) at RATE requests/s
# (0: as fast as answered), alternating rounds without and with `plangate watch` attached:
# throughput and plangate's CPU time per request, medians compared; and what the watcher saw
# and dropped. Usage: scripts/bench-watch.sh [ROUNDS] [SECONDS] [RATE]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rounds="${1:-3}"; dur="${2:-5}"; rate="${3:-10000}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release --quiet
bin=target/release/plangate
python3 scripts/gen-keys.py 10000 "$work/k" --high-limits >/dev/null
$bin serve --config "$work/k/keys.yaml" --grpc-addr 127.0.0.1:50081 --admin-addr 127.0.0.1:9181 \
  --no-persist --admin-token bench-token 2>"$work/serve.log" & pg=$!; pids+=($pg)
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:9181/readyz && break; sleep 0.1; done
pace=(); [ "$rate" != 0 ] && pace=(--rate "$rate")
cpu() { awk '{print $14 + $15}' "/proc/$pg/stat"; }
tick=$(getconf CLK_TCK)
load() { # → "requests/s  µs of plangate CPU per request"
  local c0 c1 out
  c0=$(cpu)
  out=$($bin bench --api check --target 127.0.0.1:50081 --duration "$dur" --warmup 1 --keys 10000 \
    --connections 2 --concurrency 32 "${pace[@]}" --json)
  c1=$(cpu)
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); ticks, tick, warm = int(sys.argv[2]), int(sys.argv[3]), 1.0
n = r["requests"] * (1 + warm / r["seconds"])   # CPU includes the warm-up second
print(r["requests_per_second"], ticks / tick / n * 1e6)' "$out" $((c1 - c0)) "$tick"
}
without=(); with=(); cpu_a=(); cpu_b=(); seen=0; dropped=0
for i in $(seq 1 "$rounds"); do
  read -r a ca < <(load)
  PLANGATE_ADMIN_TOKEN=bench-token $bin watch --admin http://127.0.0.1:9181 >"$work/watch-$i.jsonl" 2>/dev/null & w=$!
  sleep 0.5
  read -r b cb < <(load)
  kill $w; wait $w 2>/dev/null || true
  read -r s d < <(python3 -c '
import json, sys
s = d = 0
for line in open(sys.argv[1]):
    s += 1; d += json.loads(line)["dropped"]
print(s, d)' "$work/watch-$i.jsonl")
  seen=$((seen + s)); dropped=$((dropped + d))
  without+=("$a"); with+=("$b"); cpu_a+=("$ca"); cpu_b+=("$cb")
  printf 'round %d: without a watcher %8.0f req/s %5.1f µs CPU/req; with one %8.0f req/s %5.1f µs CPU/req (watcher saw %d, dropped %d)\n' \
    "$i" "$a" "$ca" "$b" "$cb" "$s" "$d"
done
python3 - "${without[*]}" "${with[*]}" "${cpu_a[*]}" "${cpu_b[*]}" "$seen" "$dropped" "$rate" <<'PY'
import statistics, sys
m = lambda i: statistics.median(float(x) for x in sys.argv[i].split())
a, b, ca, cb = m(1), m(2), m(3), m(4)
print(f"offered: {sys.argv[7]} req/s (0: as fast as answered)")
print(f"median throughput: without {a:.0f} req/s, with a watcher {b:.0f} req/s; with/without = {b / a:.3f}")
print(f"median plangate CPU per request: without {ca:.1f} µs, with {cb:.1f} µs; with/without = {cb / ca:.3f}")
print(f"the watcher saw {sys.argv[5]} decisions and was told of {sys.argv[6]} it lost")
PY

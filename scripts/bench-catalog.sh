#!/usr/bin/env bash
# The runtime catalog, measured (docs/benchmarks.md, "Runtime catalog"):
#  1. keys created per second on one replica with Redis, and how long a key made there takes to
#     be known by a second replica on the same Redis (p50, p99): `plangate bench-catalog`;
#  2. Check's server CPU per call with N runtime keys (ImportApiKeys into a plan of the file)
#     against N keys of the file, in one run: both servers on core 0, the load generator on
#     core 1, alternating rounds, every request admitted and charged.
# Usage: scripts/bench-catalog.sh [KEYS] [SECONDS] [ROUNDS]     (default 1000000 5 5)
# (ONLY=check measures part 2 only, ONLY=creates part 1 only.) Part 2 runs twice, each server once in the load
# generator's target slot and once in its baseline slot: the slot measured first was seen to pay
# ~4% on these machines (the same server against itself, docs/benchmarks.md), and the mean of
# the two orders cancels it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
keys="${1:-1000000}"; dur="${2:-5}"; rounds="${3:-5}"
. "$root/scripts/lib/servers.sh"
cargo build --release --quiet
bin="$root/target/release/plangate"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# 1. Creates and propagation, two replicas on one Redis.
if [ "${ONLY:-}" != check ]; then
need redis-server redis-server
python3 scripts/gen-keys.py 10 "$work/small" --high-limits
rp=$(port)
redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$work/redis.log" 2>&1 & pids+=($!)
wait_port "$rp"
a=$(port); b=$(port)
for admin in "$a" "$b"; do
  "$bin" serve --config "$work/small/keys.yaml" --grpc-addr "127.0.0.1:$(port)" \
    --admin-addr "127.0.0.1:$admin" --store "redis://127.0.0.1:$rp" \
    2>"$work/replica-$admin.log" & pids+=($!)
done
wait_port "$a"; wait_port "$b"
"$bin" bench-catalog --admin "127.0.0.1:$a" --follower "127.0.0.1:$b" \
  --creates 20000 --concurrency 16 --samples 300 > "$work/catalog.json"
python3 - "$work/catalog.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["propagation_ms"]
print(f"| keys created per second, one replica, Redis ({r['concurrency']} callers, {r['creates']} keys) | **{r['creates_per_second']:.0f}/s** |")
print(f"| a key made on replica A known by replica B ({r['propagation_samples']} keys) | p50 **{p['p50']:.0f} ms**, p99 **{p['p99']:.0f} ms**, max {p['max']:.0f} ms |")
PY
fi

[ "${ONLY:-}" = creates ] && exit 0
# 2. Check CPU: N runtime keys against N file keys.
python3 scripts/gen-keys.py "$keys" "$work/bk" --high-limits
# The same file without its keys: the runtime server's.
python3 - "$work/bk/keys.yaml" "$work/bk/nokeys.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
open(sys.argv[2], "w").write(text[: text.index("api_keys:")])
PY
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
gf=$(port); af=$(port); gr=$(port); ar=$(port); g2=$(port); a2=$(port)
taskset -c 0 "$bin" serve --config "$work/bk/keys.yaml" --grpc-addr "127.0.0.1:$gf" \
  --admin-addr "127.0.0.1:$af" --no-persist 2>"$work/file.log" & pf=$!; pids+=($pf)
taskset -c 0 "$bin" serve --config "$work/bk/nokeys.yaml" --grpc-addr "127.0.0.1:$gr" \
  --admin-addr "127.0.0.1:$ar" --no-persist 2>"$work/runtime.log" & pr=$!; pids+=($pr)
# A second file server: the same against itself, the noise floor of the comparison.
taskset -c 0 "$bin" serve --config "$work/bk/keys.yaml" --grpc-addr "127.0.0.1:$g2" \
  --admin-addr "127.0.0.1:$a2" --no-persist 2>"$work/file2.log" & p2=$!; pids+=($p2)
wait_port "$af"; wait_port "$ar"; wait_port "$a2"
# The keys into the runtime catalog, 10,000 per ImportApiKeys call, in the file's plan `gold`.
python3 - "$keys" "$ar" <<'PY'
import http.client, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
for start in range(0, n, 10000):
    rows = "".join(f"k{i},bench-key-{i:012d},gold\n" for i in range(start, min(n, start + 10000)))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", "/apikeys?mode=import&format=csv&failonwarnings=true",
              body="Name,Key,UsagePlanIds\n" + rows, headers={"content-type": "text/csv"})
    r = c.getresponse(); body = r.read()
    if r.status != 201:
        sys.exit(f"import failed: {r.status} {body[:300]}")
PY
rss() { awk '/VmRSS/ {print $2 / 1024}' "/proc/$1/status"; }
echo "| resident memory with $keys keys: file / runtime | $(rss $pf) MiB / $(rss $pr) MiB |"
# Each order once: (target, baseline) = (runtime, file), then (file, runtime); and the same
# for the second file server against the first (file2 in the "runtime" role).
for pair in runtime file2; do
  if [ $pair = runtime ]; then gx=$gr; px=$pr; else gx=$g2; px=$p2; fi
  for order in x-file file-x; do
    if [ $order = x-file ]; then t=$gx; b=$gf; else t=$gf; b=$gx; fi
    f0=$(cpu $pf); r0=$(cpu $px)
    taskset -c 1 "$bin" bench --api check --target "127.0.0.1:$t" --baseline "127.0.0.1:$b" \
      --duration "$dur" --rounds "$rounds" --keys "$keys" --connections 2 --concurrency 32 --json > "$work/check-$pair-$order.json"
    f1=$(cpu $pf); r1=$(cpu $px)
    echo "$pair $order $((r1 - r0)) $((f1 - f0))" >> "$work/cpu"
  done
done
python3 - "$work" "$tick" "$keys" <<'PY'
import json, math, sys
w, tick, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ratios = {}
for line in open(f"{w}/cpu"):
    pair, order, xt, ft = line.split(); xt, ft = int(xt), int(ft)
    r = json.load(open(f"{w}/check-{pair}-{order}.json"))
    tgt = sum(t["requests"] * (1 + 1 / t["seconds"]) for _, t in r["rounds"])
    base = sum(b["requests"] * (1 + 1 / b["seconds"]) for b, _ in r["rounds"])
    n_x, n_f = (tgt, base) if order == "x-file" else (base, tgt)
    cx, cf = xt / tick / n_x * 1e6, ft / tick / n_f * 1e6
    rps = r["ratio"] if order == "x-file" else 1 / r["ratio"]
    ratios.setdefault(pair, []).append((cx / cf, rps))
    slot = f"{pair} in the target slot" if order == "x-file" else f"file in the target slot"
    print(f"| Check with {n} keys, {pair} vs file ({slot}): server CPU per call, file / {pair} | {cf:.2f} µs / {cx:.2f} µs | {cx / cf:.3f}× (calls/s {rps:.3f}) |")
for pair, label in (("file2", "a second file server (the noise floor)"), ("runtime", "runtime keys")):
    (c1, q1), (c2, q2) = ratios[pair]
    print(f"| Check with {n} keys: {label} / file keys, both orders (geometric mean) | CPU per call **{math.sqrt(c1 * c2):.3f}×** | calls/s **{math.sqrt(q1 * q2):.3f}** |")
PY

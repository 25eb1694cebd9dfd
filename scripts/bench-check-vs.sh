#!/usr/bin/env bash
# Check and ShouldRateLimit of this tree against another revision, in one run: both servers on
# core 0, the load generator on core 1, alternating rounds (`plangate bench --baseline`), 1,000
# keys, every request admitted and charged (5 limits + usage); calls/s and server CPU per call.
# Usage: scripts/bench-check-vs.sh REV [SECONDS] [ROUNDS]     e.g. scripts/bench-check-vs.sh HEAD~5
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rev="${1:?usage: scripts/bench-check-vs.sh REV [SECONDS] [ROUNDS]}"
dur="${2:-5}"; rounds="${3:-5}"
base="$root/target/bench-vs/tree"
base_target="$root/target/bench-vs/target"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  rm -rf "$work"; git -C "$root" worktree remove --force "$base" >/dev/null 2>&1 || true
}
trap cleanup EXIT
rm -rf "$base"; mkdir -p "$(dirname "$base")"
git -C "$root" worktree add --force --detach "$base" "$rev" >/dev/null
# Build both first, so that no build overlaps a measurement (the other tree's dependencies are
# this tree's: seeding its target directory saves rebuilding them).
cargo build --release --quiet
[ -d "$base_target/release" ] || { mkdir -p "$base_target"; cp -r target/release "$base_target/"; }
(cd "$base" && CARGO_TARGET_DIR="$base_target" cargo build --release --quiet --bin plangate)
old="$base_target/release/plangate"; new="$root/target/release/plangate"

python3 scripts/gen-keys.py 1000 "$work/bk" --high-limits
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
taskset -c 0 "$new" serve --config "$work/bk/keys.yaml" --grpc-addr 127.0.0.1:50081 \
  --admin-addr 127.0.0.1:9181 --no-persist 2>"$work/new.log" & pn=$!; pids+=($pn)
taskset -c 0 "$old" serve --config "$work/bk/keys.yaml" --grpc-addr 127.0.0.1:50082 \
  --admin-addr 127.0.0.1:9182 --no-persist 2>"$work/old.log" & po=$!; pids+=($po)
sleep 2
echo "| $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) | $rev | this tree | ratio |"
echo "|---|---|---|---|"
for api in check rls; do
  n0=$(cpu $pn); o0=$(cpu $po)
  taskset -c 1 "$new" bench --api $api --target 127.0.0.1:50081 --baseline 127.0.0.1:50082 \
    --duration "$dur" --rounds "$rounds" --keys 1000 --connections 2 --concurrency 32 --json > "$work/$api.json"
  n1=$(cpu $pn); o1=$(cpu $po)
  python3 - "$work/$api.json" "$((n1 - n0))" "$((o1 - o0))" "$tick" "$api" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); new_t, old_t, tick, api = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
# CPU includes each round's warm-up second: count it at the measured rate.
n_new = sum(t["requests"] * (1 + 1 / t["seconds"]) for _, t in r["rounds"])
n_old = sum(b["requests"] * (1 + 1 / b["seconds"]) for b, _ in r["rounds"])
cn, co = new_t / tick / n_new * 1e6, old_t / tick / n_old * 1e6
name = "Check" if api == "check" else "ShouldRateLimit"
print(f"| {name}: calls/s | {r['baseline_rps_median']:.0f} | {r['target_rps_median']:.0f} | **{r['ratio']:.3f}** |")
print(f"| {name}: server CPU per call | {co:.2f} µs | {cn:.2f} µs | **{cn / co:.3f}×** |")
PY
done

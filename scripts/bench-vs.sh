#!/usr/bin/env bash
# The engine decision benchmark (criterion, benches/engine.rs) of this tree against another
# revision, measured in one run, in alternating rounds, as a ratio (docs/benchmarks.md).
# Usage: scripts/bench-vs.sh REV [ROUNDS]     e.g. scripts/bench-vs.sh HEAD~3 3
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rev="${1:?usage: scripts/bench-vs.sh REV [ROUNDS]}"
rounds="${2:-3}"
base="$root/target/bench-vs/tree"
base_target="$root/target/bench-vs/target"
rm -rf "$base"
mkdir -p "$(dirname "$base")"
git -C "$root" worktree add --force --detach "$base" "$rev" >/dev/null
cleanup() { git -C "$root" worktree remove --force "$base" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# Build both first, so that no build overlaps a measurement.
(cd "$base" && CARGO_TARGET_DIR="$base_target" cargo bench --quiet --bench engine --no-run 2>/dev/null)
(cd "$root" && cargo bench --quiet --bench engine --no-run 2>/dev/null)

measure() { # dir target-dir → median ns of one decision
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --quiet --bench engine -- --noplot 2>/dev/null) |
    python3 -c '
import re, sys
t = sys.stdin.read()
m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", t)
unit = {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6}[m.group(2)]
print(float(m.group(1)) * unit)'
}

echo "engine decision (all limits, memory store), median of criterion, ns"
echo "round  $rev  this-tree"
b=(); t=()
for i in $(seq 1 "$rounds"); do
  x=$(measure "$base" "$base_target"); y=$(measure "$root" "$root/target")
  b+=("$x"); t+=("$y")
  printf '%5d  %8.1f  %8.1f\n' "$i" "$x" "$y"
done
python3 - "${b[*]}" "${t[*]}" <<'PY'
import statistics, sys
b = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
mb, mt = statistics.median(b), statistics.median(t)
print(f"median: base {mb:.1f} ns, this tree {mt:.1f} ns; this/base = {mt / mb:.3f} (below 1: faster)")
PY

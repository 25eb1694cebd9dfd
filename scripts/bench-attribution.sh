#!/usr/bin/env bash
# Where a call's allocations and copies go, by the crate that asked (issue 28): plangate and the
# empty handler, Check and ShouldRateLimit, warm, one call at a time (benches/alloc.rs).
# - Allocations: benches/alloc.rs --sites captures the stack of each allocation the server's
#   threads make in the measured calls; each belongs to the first frame outside the containers
#   (std, alloc, bytes, hashbrown, ...).
# - Copies: `valgrind --tool=dhat --mode=copy` counts memcpy/memmove calls and bytes by stack
#   (copies the compiler inlines as plain moves are not counted); runs of N and 2N calls give
#   one call's, without start-up (scripts/lib/dhat_copies.py).
# Built with line tables (inlined frames named) in target/attribution, apart from the other
# benches' build.
# Usage: scripts/bench-attribution.sh [N]     (default 1000)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-1000}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
export CARGO_PROFILE_BENCH_DEBUG=line-tables-only CARGO_TARGET_DIR="$root/target/attribution"
bin=$(cargo bench --bench alloc --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p')
[ -x "$bin" ] || { echo "could not build benches/alloc.rs" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
for api in check rls; do
  for who in plangate baseline; do
    name=Check; [ "$api" = rls ] && name=ShouldRateLimit
    server="plangate"; [ "$who" = baseline ] && server="the empty handler"
    echo "## $name, $server"
    echo
    "$bin" --bench --only "$who:$api" --calls "$n" --sites
    echo
    for calls in "$n" $((2 * n)); do
      valgrind --tool=dhat --mode=copy --num-callers=100 --fullpath-after= --dhat-out-file="$work/$who-$api-$calls.json" \
        "$bin" --bench --only "$who:$api" --calls "$calls" >/dev/null 2>&1
    done
    python3 scripts/lib/dhat_copies.py "$n" "$work/$who-$api-$n.json" "$work/$who-$api-$((2 * n)).json"
    echo
  done
done

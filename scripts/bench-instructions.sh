#!/usr/bin/env bash
# Instructions per call of the server thread, plangate and the empty handler, for Check and
# ShouldRateLimit (issue 28): a count that does not move with the host or with what else the
# machine is doing. benches/alloc.rs serves both in one process (`--only SERVER:API` measures
# one); `valgrind --tool=callgrind --separate-threads=yes` counts each thread's instructions;
# two runs of N and 2N calls (each after as many warm-up calls) and their difference give the
# cost of one call, without start-up. Valgrind reports a CPU without the x86 SHA extensions, so
# plangate takes the path of such a CPU: a key seen before comes from the per-thread cache of
# key hashes (snapshot::seen), a new one is hashed in software (about 3,400 instructions).
# Usage: scripts/bench-instructions.sh [N]     (default 1000)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-1000}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
bin=$(cargo bench --bench alloc --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p')
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
server_thread() { # file prefix → the instructions of the busiest thread but the main one
  for f in "$1".*-*; do
    case "$f" in *-01) continue ;; esac
    sed -n 's/^summary: //p' "$f"
  done | sort -n | tail -1
}
declare -A per
for who in plangate baseline; do
  for api in check rls; do
    for calls in "$n" $((2 * n)); do
      valgrind --tool=callgrind --separate-threads=yes \
        --callgrind-out-file="$work/$who-$api-$calls.%p" \
        "$bin" --bench --only "$who:$api" --calls "$calls" >/dev/null 2>&1
    done
    a=$(server_thread "$work/$who-$api-$n"); b=$(server_thread "$work/$who-$api-$((2 * n))")
    per[$who-$api]=$(( (b - a) / (2 * n) ))
  done
done
echo "| call | plangate: instructions per call | empty handler | ratio |"
echo "|---|---|---|---|"
for api in check rls; do
  name=Check; [ "$api" = rls ] && name=ShouldRateLimit
  p=${per[plangate-$api]}; e=${per[baseline-$api]}
  echo "| $name | $p | $e | **$(python3 -c "print(f'{$p / $e:.3f}')")×** |"
done

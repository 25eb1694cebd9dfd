#!/usr/bin/env bash
# Redis cost per decision (docs/benchmarks.md, issue 18): two plangate replicas, each loaded by
# its own `plangate bench` (1,000 keys; every decision charges the account, a stage method, the
# key's plan throttle, its quota and its daily usage), against
#   node      one redis-server, shared buckets exact (in the decision's script)
#   node-l    one redis-server, shared buckets leased
#   cluster   a 3-master Redis Cluster (shared buckets leased)
#   old       one redis-server with plangate at REV (the earlier layout), when REV is given
# and, for the floor of a counted decision (issue 28):
#   floor-1   what envoyproxy/ratelimit sends per descriptor, INCRBY + EXPIRE pipelined, for one
#             counter per decision (benches/redis_floor.rs: two clients × 32 in flight)
#   quota     plangate on one node with one quota per key as the plan's only limit
#             (`gen-keys.py --quota-only`: the quota and the key's daily usage, one record) —
#             and the account's throttle, which every deployment has (AWS's default when the
#             file names none), in the decision's script
#   quota-l   the same with shared buckets leased: the account's throttle taken in batches, the
#             decision's script touching the key's record only
#   floor-5   INCRBY + EXPIRE for each of a full plan's five counters, one pipeline a decision
# Reported per setup: decisions/s (both replicas), Redis CPU per decision (used_cpu_user +
# used_cpu_sys over all masters, read from Redis itself), and Redis commands per decision
# (INFO commandstats over all masters: EVALSHA and the commands inside scripts).
# GET is left out: the runtime catalog's poll, one per replica every 200 ms, no decision's.
#   …-hi      the same with 4 × 32 calls in flight per replica instead of 2 × 16 (a loaded Redis
#             batches more requests per read)
# Usage: scripts/bench-redis.sh [SECONDS] [REV]        e.g. scripts/bench-redis.sh 10 14a7574
# (ONLY=node-l,cluster measures those setups only; VERBOSE=1 prints INFO commandstats.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-10}"
rev="${2:-}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$rev" ] && git -C "$root" worktree remove --force "$work/old-tree" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && cargo build --release --quiet)
new="$root/target/release/plangate"
floor=$(cd "$root" && cargo bench --bench redis_floor --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p')
floor="$root/$floor"
old=""
if [ -n "$rev" ]; then
  git -C "$root" worktree add --force --detach "$work/old-tree" "$rev" >/dev/null
  (cd "$work/old-tree" && CARGO_TARGET_DIR="$root/target/bench-redis-old" cargo build --release --quiet)
  old="$root/target/bench-redis-old/release/plangate"
fi
python3 "$root/scripts/gen-keys.py" 1000 "$work/cfg" --high-limits
python3 "$root/scripts/gen-keys.py" 1000 "$work/q1" --high-limits --quota-only
full_config="$work/cfg/keys.yaml"
config="$full_config"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cli() { redis-cli -p "$1" "${@:2}"; }

start_redis() { # port [args…]
  local port="$1"; shift
  mkdir -p "$work/r$port"
  (cd "$work/r$port" && redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --protected-mode no "$@" >/dev/null 2>&1 &
   echo $! > "$work/r$port/pid")
  pids+=("$(cat "$work/r$port/pid")")
  for _ in $(seq 50); do cli "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server on $port did not start" >&2; return 1
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# Sums over masters: CPU seconds, and calls of every command.
redis_totals() { # ports… → "cpu calls"
  local cpu=0 calls=0 reads=0
  for p in "$@"; do
    cli "$p" role | head -1 | grep -q master || continue
    local c k
    c=$(cli "$p" info cpu | awk -F: '/^used_cpu_(user|sys):/ {s+=$2} END {print s}')
    r=$(cli "$p" info stats | awk -F: '/^total_reads_processed:/ {print $2+0}')
    reads=$((reads + r))
    k=$(cli "$p" info commandstats | grep -v '^cmdstat_info:\|^cmdstat_config\|^cmdstat_role\|^cmdstat_get:' |
        sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s+0}')
    cpu=$(python3 -c "print($cpu + $c)"); calls=$((calls + k))
  done
  echo "$cpu $calls $reads"
}

# One line of the table: setup, decisions/s, Redis CPU µs per decision, commands per decision,
# decisions per Redis read, errors — from the two load generators' JSON.
report() { # name cpu0 cpu1 calls reads
  python3 - "$1" "$2" "$3" "$4" "$work/$1-bench-0.json" "$work/$1-bench-1.json" "$5" <<'PY'
import json, sys
name, cpu0, cpu1, calls = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
reads = int(sys.argv[7])
def load(p):
    t = open(p).read()
    return json.loads(t[t.index("{"):])
runs = [load(p) for p in sys.argv[5:7]]
n = sum(r["requests"] for r in runs)
errors = sum(r["errors"] for r in runs)
rps = sum(r["requests_per_second"] for r in runs)
print(f"{name:8s} {rps:10.0f} {1e6 * (cpu1 - cpu0) / n:10.2f} {calls / n:10.3f} {n / max(reads, 1):10.2f} {errors:8d}")
PY
}

measure() { # name binary store-url extra-flags redis-ports…
  local name="$1" bin="$2" url="$3" extra="$4"; shift 4
  local conns=2 conc=16
  if [[ "$name" == *-hi ]]; then conns=4; conc=32; fi
  # ONLY=name,name measures those setups only.
  if [ -n "${ONLY:-}" ] && ! [[ ",$ONLY," == *",$name,"* ]]; then stop_all; return; fi
  local ports=("$@") g=() a=()
  for i in 0 1; do
    g[$i]=$(free_port); a[$i]=$(free_port)
    # shellcheck disable=SC2086
    "$bin" serve --config "$config" --no-watch --no-persist --store "$url" $extra \
      --store-timeout-ms 1000 --grpc-addr "127.0.0.1:${g[$i]}" --admin-addr "127.0.0.1:${a[$i]}" \
      >"$work/$name-$i.log" 2>&1 &
    pids+=("$!")
  done
  for i in 0 1; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:${a[$i]}/readyz" >/dev/null && break; sleep 0.1; done
  done
  # Warm up (scripts loaded, key hashes created), then count from zero.
  for i in 0 1; do
    "$new" bench --target "127.0.0.1:${g[$i]}" --keys 1000 --duration 2 --warmup 0 --connections 2 --concurrency 16 >/dev/null
  done
  for p in "${ports[@]}"; do cli "$p" config resetstat >/dev/null; done
  read -r cpu0 _ reads0 < <(redis_totals "${ports[@]}")
  local load=()
  for i in 0 1; do
    "$new" bench --target "127.0.0.1:${g[$i]}" --keys 1000 --duration "$secs" --warmup 0 \
      --connections "$conns" --concurrency "$conc" --json >"$work/$name-bench-$i.json" &
    load+=("$!")
  done
  wait "${load[@]}"
  sleep 0.5
  read -r cpu1 calls reads1 < <(redis_totals "${ports[@]}")
  if [[ "$name" == cluster* ]]; then
    # Where the 1,000 keys' hashes are: every master holds some.
    printf '%s: keys per master:' "$name" >&2
    for p in "${ports[@]}"; do printf ' %s' "$(cli "$p" dbsize)" >&2; done; echo >&2
  fi
  if [ -n "${VERBOSE:-}" ]; then
    for p in "${ports[@]}"; do cli "$p" info commandstats | grep -o '^cmdstat_[a-z]*:calls=[0-9]*,usec=[0-9]*,usec_per_call=[0-9.]*' | tr '\n' ' '; echo; done
  fi
  report "$name" "$cpu0" "$cpu1" "$calls" "$((reads1 - reads0))"
  stop_all
}

# The floor: benches/redis_floor.rs, two clients × 32 decisions in flight, COUNTERS
# INCRBY + EXPIRE pairs per decision.
measure_floor() { # name counters port
  local name="$1" counters="$2" port="$3"
  if [ -n "${ONLY:-}" ] && ! [[ ",$ONLY," == *",$name,"* ]]; then stop_all; return; fi
  "$floor" --url "redis://127.0.0.1:$port" --counters "$counters" --seconds 2 >/dev/null
  cli "$port" config resetstat >/dev/null
  read -r cpu0 _ reads0 < <(redis_totals "$port")
  local load=()
  for i in 0 1; do
    "$floor" --url "redis://127.0.0.1:$port" --counters "$counters" --seconds "$secs" \
      --concurrency 32 >"$work/$name-bench-$i.json" &
    load+=("$!")
  done
  wait "${load[@]}"
  sleep 0.5
  read -r cpu1 calls reads1 < <(redis_totals "$port")
  report "$name" "$cpu0" "$cpu1" "$calls" "$((reads1 - reads0))"
  stop_all
}

echo "setup    decisions/s  Redis-µs-CPU/decision  commands/decision  decisions/read  errors"
p=$(free_port); start_redis "$p" || exit 1
measure_floor floor-1 1 "$p"
config="$work/q1/keys.yaml"
p=$(free_port); start_redis "$p" || exit 1
measure quota "$new" "redis://127.0.0.1:$p" "" "$p"
p=$(free_port); start_redis "$p" || exit 1
measure quota-l "$new" "redis://127.0.0.1:$p" "--store-shared leased" "$p"
config="$full_config"
p=$(free_port); start_redis "$p" || exit 1
measure_floor floor-5 5 "$p"
p=$(free_port); start_redis "$p" || exit 1
measure node "$new" "redis://127.0.0.1:$p" "" "$p"
p=$(free_port); start_redis "$p" || exit 1
measure node-l "$new" "redis://127.0.0.1:$p" "--store-shared leased" "$p"
p=$(free_port); start_redis "$p" || exit 1
measure node-l-hi "$new" "redis://127.0.0.1:$p" "--store-shared leased" "$p"
start_cluster() {
  ports=()
  for _ in 1 2 3; do
    # A port whose cluster bus port (+10000) is free too; another on a lost race.
    while :; do
      q=$(free_port)
      [ "$q" -lt 55000 ] && start_redis "$q" --cluster-enabled yes --cluster-config-file nodes.conf && break
    done
    ports+=("$q")
  done
  redis-cli --cluster create $(for q in "${ports[@]}"; do printf '127.0.0.1:%s ' "$q"; done) \
    --cluster-replicas 0 --cluster-yes >/dev/null
  for _ in $(seq 100); do
    ok=1; for q in "${ports[@]}"; do cli "$q" cluster info | grep -q cluster_state:ok || ok=0; done
    [ "$ok" = 1 ] && break; sleep 0.1
  done
  cluster_url="redis-cluster://$(IFS=,; for q in "${ports[@]}"; do printf '127.0.0.1:%s,' "$q"; done | sed 's/,$//')"
}
for name in cluster cluster-hi; do
  if [ -n "${ONLY:-}" ] && ! [[ ",$ONLY," == *",$name,"* ]]; then continue; fi
  start_cluster
  measure "$name" "$new" "$cluster_url" "" "${ports[@]}"
done
if [ -n "$old" ]; then
  p=$(free_port); start_redis "$p"
  measure old "$old" "redis://127.0.0.1:$p" "" "$p"
fi

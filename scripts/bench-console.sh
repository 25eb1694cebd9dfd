#!/usr/bin/env bash
# The console's server time per page at a million keys (docs/benchmarks.md, "Console"): half
# the keys in the configuration file (with names and customer ids), half in the runtime catalog
# (ImportApiKeys, with names), all in plan `gold`; a small runtime plan `silver` of 10 keys and
# a small file plan `bronze` of the file's last 10 keys, on another stage; usage made by a few seconds of Check traffic over every key. Each page is asked
# for REPEATS times through one signed-in session; the server's own time (its `Server-Timing`
# header: from the request read to the answer built) is reported as median, p90 and max — at
# KEYS keys, and in the same run at BASE keys (the baseline: what a page costs when the catalog
# is small), with the ratio of the medians.
# Usage: scripts/bench-console.sh [KEYS] [REPEATS] [BASE]    (default 1000000 30 10000; DUMP=DIR
# keeps the pages measured)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
keys="${1:-1000000}"; repeats="${2:-30}"; base="${3:-10000}"
if [ -z "${ONE_SIZE_OUT:-}" ]; then
  cargo build --release --quiet
  out="$(mktemp -d)"
  echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  ONE_SIZE_OUT="$out/base" "$0" "$base" "$repeats"
  ONE_SIZE_OUT="$out/big" "$0" "$keys" "$repeats"
  python3 - "$out" "$keys" "$base" <<'PY'
import sys
out, keys, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
read = lambda f: [l.rstrip("\n").split("\t") for l in open(f"{out}/{f}")]
small = {r[0]: r for r in read("base")}
print(f"| page | {keys:,} keys: median | p90 | max | {base:,} keys: median | median ratio |")
print("|---|---|---|---|---|---|")
for label, med, p90, mx, status in read("big"):
    if label == "rss":
        print(f"| resident memory after the traffic | {float(med):.0f} MiB | | | {float(small['rss'][1]):.0f} MiB | |")
        continue
    b = small[label]
    assert status == "200" and b[4] == "200", (label, status, b[4])
    print(f"| {label} | **{float(med):.2f} ms** | {float(p90):.2f} ms | {float(mx):.2f} ms | {float(b[1]):.2f} ms | {float(med) / float(b[1]):.2f}× |")
PY
  rm -rf "$out"
  exit 0
fi
. "$root/scripts/lib/servers.sh"
bin="$root/target/release/plangate"
half=$((keys / 2))
python3 - "$half" "$work/plans.yaml" <<'PY'
import hashlib, sys
n, out = int(sys.argv[1]), sys.argv[2]
with open(out, "w") as f:
    f.write("""version: 1
apis:
  petstore:
    stages:
      prod: {}
      beta: {}
usage_plans:
  gold:
    throttle: { rate: 100000000, burst: 100000000 }
    quota: { limit: 2000000000, period: MONTH }
    api_stages: [{ api: petstore, stage: prod }]
  bronze:
    quota: { limit: 1000, period: DAY }
    api_stages: [{ api: petstore, stage: beta }]
api_keys:
""")
    for i in range(n):
        h = hashlib.sha256(b"bench-key-%012d" % i).hexdigest()
        plans = "[gold, bronze]" if i >= n - 10 else "[gold]"
        f.write(f"  - {{ id: f{i}, value_sha256: {h}, name: file customer {i:07d}, customer_id: cust-{i % 100000}, usage_plans: {plans} }}\n")
PY
token="bench-console-token-0123456789"
g=$(port); a=$(port)
"$bin" serve --config "$work/plans.yaml" --grpc-addr "127.0.0.1:$g" --admin-addr "127.0.0.1:$a" \
  --admin-token "$token" --no-persist 2>"$work/plangate.log" & pids+=($!)
wait_port "$a"
python3 - "$half" "$keys" "$a" "$token" <<'PY'
import http.client, json, sys
start, n, port, token = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
auth = {"authorization": f"Bearer {token}"}
def call(method, path, body, ctype="application/json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request(method, path, body=body, headers={**auth, "content-type": ctype})
    r = c.getresponse(); data = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:300]}")
    return json.loads(data or b"{}")
for s in range(start, n, 10000):
    rows = "".join(f"runtime customer {i:07d},bench-key-{i:012d},gold\n" for i in range(s, min(n, s + 10000)))
    call("POST", "/apikeys?mode=import&format=csv&failonwarnings=true", "Name,Key,UsagePlanIds\n" + rows, "text/csv")
silver = call("POST", "/usageplans", json.dumps({"name": "silver", "apiStages": [{"apiId": "petstore", "stage": "beta"}],
                                                 "quota": {"limit": 1000, "period": "DAY"}}))["id"]
for i in range(10):
    k = call("POST", "/apikeys", json.dumps({"name": f"silver key {i}", "enabled": True}))
    call("POST", f"/usageplans/{silver}/keys", json.dumps({"keyId": k["id"], "keyType": "API_KEY"}))
PY
silver=$(curl -s -H "authorization: Bearer $token" "http://127.0.0.1:$a/usageplans" \
  | python3 -c 'import json,sys; print([p["id"] for p in json.load(sys.stdin)["item"] if p["name"]=="silver"][0])')
# Usage on many keys: Check traffic over every key.
"$bin" bench --api check --target "127.0.0.1:$g" --keys "$keys" --duration 8 --warmup 0 \
  --connections 2 --concurrency 32 >/dev/null
# And on the first 5,000 keys for sure (the key pages measured are among them).
"$bin" bench --api check --target "127.0.0.1:$g" --keys 5000 --requests 20000 --warmup 0 \
  --connections 1 --concurrency 16 >/dev/null
rss=$(awk '/VmRSS/ {print $2 / 1024}' "/proc/${pids[0]}/status")
cookie=$(curl -s -o /dev/null -D - -d "token=$token" "http://127.0.0.1:$a/ui/signin" \
  | awk -F'[=;]' 'tolower($1) ~ /^set-cookie: plangate_console/ {print $2}')
[ -n "$cookie" ] || { echo "no console session" >&2; exit 1; }
runtime_key=$(curl -s -H "authorization: Bearer $token" "http://127.0.0.1:$a/apikeys?nameQuery=runtime%20customer%20$(printf %07d $((half + half / 2)))&limit=1" \
  | python3 -c 'import json,sys; i=json.load(sys.stdin)["item"]; print(i[0]["id"] if i else "")')
[ -n "$runtime_key" ] || runtime_key=f1
pages=(
  "keys, first page|/ui/keys"
  "keys, name prefix of 1 key (file)|/ui/keys?q=file+customer+$(printf %07d $((half / 4)))"
  "keys, name prefix of half the keys (runtime)|/ui/keys?q=runtime+customer+"
  "keys, name prefix of none|/ui/keys?q=nobody"
  "keys, by customer id|/ui/keys?customer=cust-42"
  "keys, by id|/ui/keys?q=f$((half * 9 / 10))"
  "keys, page 2 of a name prefix|/ui/keys?q=file+customer&position=file+customer+0000050%00f50"
  "plan detail, gold (every key)|/ui/plans/gold"
  "plan detail, silver (10 runtime keys)|/ui/plans/$silver"
  "plan detail, bronze (the file's last 10 keys)|/ui/plans/bronze"
  "key detail + 30 days of usage (file key)|/ui/keys/f42"
  "key detail + 30 days of usage (runtime key)|/ui/keys/$runtime_key"
  "usage, one key, 30 days|/ui/usage?plan=gold&key=f42"
  "usage, plan gold, first 50 keys, 30 days|/ui/usage?plan=gold"
  "overview|/ui/"
  "plans|/ui/plans"
)
for entry in "${pages[@]}"; do
  label="${entry%%|*}"; path="${entry#*|}"
  : > "$work/t"
  status=""
  for _ in $(seq 1 "$repeats"); do
    out=$(curl -s -o "$work/body" -D - -b "plangate_console=$cookie" "http://127.0.0.1:$a$path")
    status=$(printf '%s' "$out" | awk 'NR==1 {print $2}')
    printf '%s' "$out" | awk -F'dur=' 'tolower($0) ~ /^server-timing/ {print $2 + 0}' >> "$work/t"
  done
  # DUMP=DIR keeps each page's last answer (to see what was measured).
  [ -n "${DUMP:-}" ] && mkdir -p "$DUMP" && cp "$work/body" "$DUMP/$(echo "$label" | tr -c 'a-zA-Z0-9\n' '-').html"
  python3 - "$work/t" "$label" "$status" <<'PY'
import sys
t = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
print(f"{sys.argv[2]}\t{q(0.5)}\t{q(0.9)}\t{t[-1]}\t{sys.argv[3]}")
PY
done >> "$ONE_SIZE_OUT"
printf 'rss\t%s\t\t\t\n' "$rss" >> "$ONE_SIZE_OUT"

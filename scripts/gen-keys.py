#!/usr/bin/env python3
"""Writes a large plangate config for compile benchmarks.

usage: gen-keys.py N OUT_DIR [--high-limits] [--quota-only]
  → OUT_DIR/keys.yaml (N keys as value_sha256 in YAML)
    OUT_DIR/keys-csv.yaml + OUT_DIR/keys.csv (N keys in AWS CSV)
  --high-limits: limits no benchmark reaches, so every request is admitted and fully charged
  --quota-only: the plan's quota is the only limit of a key (no stage or plan throttle): one
                counted limit per key, and the key's daily usage. The account's throttle stays
                (every deployment has one: AWS's default 10,000/s when the file names none);
                with --high-limits it is one no benchmark reaches
Key values are derived from their index ("bench-key-%012d"), so a benchmark can present them.
"""
import hashlib
import os
import sys

HEADER = """version: 1
apis:
  petstore:
    stages:
      prod:
        throttle: { rate: 1000, burst: 2000 }
        methods:
          "/pets/GET": {}
          "/pets/{petId}/GET": {}
usage_plans:
  gold:
    throttle: { rate: 50, burst: 100 }
    quota: { limit: 5000, period: MONTH }
    api_stages: [{ api: petstore, stage: prod }]
"""


HIGH = {
    "rate: 1000, burst: 2000": "rate: 100000000, burst: 100000000",
    "rate: 50, burst: 100": "rate: 100000000, burst: 100000000",
    "limit: 5000, period: MONTH": "limit: 2000000000, period: MONTH",
}


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    header = HEADER
    if "--high-limits" in sys.argv[3:]:
        for a, b in HIGH.items():
            header = header.replace(a, b)
        header = header.replace("version: 1\n", "version: 1\naccount:\n  throttle: { rate: 100000000, burst: 100000000 }\n")
    if "--quota-only" in sys.argv[3:]:
        lines = header.split("\n")
        header = "\n".join(
            l
            for i, l in enumerate(lines)
            if "throttle" not in l or (i > 0 and lines[i - 1].startswith("account:"))
        )
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "keys.yaml"), "w") as f:
        f.write(header)
        f.write("api_keys:\n")
        for i in range(n):
            h = hashlib.sha256(b"bench-key-%012d" % i).hexdigest()
            f.write(f"  - {{ id: k{i}, value_sha256: {h}, usage_plans: [gold] }}\n")
    with open(os.path.join(out, "keys-csv.yaml"), "w") as f:
        f.write(header)
        f.write("api_keys_files: [keys.csv]\n")
    with open(os.path.join(out, "keys.csv"), "w") as f:
        f.write("Name,Key,Description,Enabled,UsagePlanIds\n")
        for i in range(n):
            f.write(f"key {i},bench-key-{i:012d},,TRUE,gold\n")


if __name__ == "__main__":
    main()

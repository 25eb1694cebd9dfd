#!/usr/bin/env python3
"""Writes a large plangate config for compile benchmarks.

usage: gen-keys.py N OUT_DIR   → OUT_DIR/keys.yaml (N keys as value_sha256 in YAML)
                                 OUT_DIR/keys-csv.yaml + OUT_DIR/keys.csv (N keys in AWS CSV)
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


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "keys.yaml"), "w") as f:
        f.write(HEADER)
        f.write("api_keys:\n")
        for i in range(n):
            h = hashlib.sha256(b"bench-key-%012d" % i).hexdigest()
            f.write(f"  - {{ id: k{i}, value_sha256: {h}, usage_plans: [gold] }}\n")
    with open(os.path.join(out, "keys-csv.yaml"), "w") as f:
        f.write(HEADER)
        f.write("api_keys_files: [keys.csv]\n")
    with open(os.path.join(out, "keys.csv"), "w") as f:
        f.write("Name,Key,Description,Enabled,UsagePlanIds\n")
        for i in range(n):
            f.write(f"key {i},bench-key-{i:012d},,TRUE,gold\n")


if __name__ == "__main__":
    main()

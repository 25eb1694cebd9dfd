#!/usr/bin/env python3
"""Bytes copied per call by the server, from two `valgrind --tool=dhat --mode=copy` runs.

Usage: dhat_copies.py CALLS SHORT.json LONG.json
SHORT ran CALLS measured calls and LONG twice as many, each after as many warm-up calls
(benches/alloc.rs --calls): their difference is 2 × CALLS calls, without start-up. Only stacks
of the server's runtime (tokio's multi-thread scheduler; the client in the same process runs a
current-thread one) count: run valgrind with --num-callers deep enough to see it, and
--fullpath-after= for the crates' paths.
Each copy (memcpy, memmove, ...) belongs to the first frame outside libc and the containers
(std, bytes, hashbrown, ...), by the source path of its crate: printed per crate and function.
"""
import collections
import json
import re
import sys

CONTAINERS = {"std", "bytes", "hashbrown", "smallvec", "indexmap", "slab", "mimalloc",
              "alloc_bench", "(libc)"}
FRAME = re.compile(r"^0x[0-9A-Fa-f]+: (.*) \((.*)\)$")


def frame(text):
    """(function without type parameters, crate) of a DHAT frame "0x…: name (path:line)"."""
    m = FRAME.match(text)
    if not m:
        return text, "(unknown)"
    name, where = m.group(1), m.group(2)
    return short(name), crate_of(where)


def short(name):
    """`<T<…> as Trait<…>>::f<…>` as `T::f`; any other name without its type parameters."""
    if name.startswith("<"):
        depth, last = 0, " "
        for i, c in enumerate(name):
            if c == "<":
                depth += 1
            elif c == ">" and last != "-":
                depth -= 1
                if depth == 0:
                    own = name[1:i].split(" as ")[0]
                    return without_generics(own) + without_generics(name[i + 1:])
            last = c
    return without_generics(name)


def without_generics(name):
    out, depth, last = [], 0, " "
    for c in name:
        if c == "<":
            depth += 1
        elif c == ">" and last != "-":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(c)
        last = c
    return "".join(out)


def crate_of(where):
    if where.startswith("in "):
        return "(libc)"  # a shared object without line tables: libc, valgrind's preload
    path = where.rsplit(":", 1)[0]
    if path.startswith(("/rustc/", "/rust/deps/")):
        return "std"
    if "/benches/" in path:
        return "alloc_bench"
    m = re.search(r"/index\.crates\.io-[^/]+/([^/]+)/", path)
    if m:
        # The name ends at the first dash before a digit: hyper-util-0.1.3, foo-1.0.0-rc.1.
        return re.split(r"-(?=\d)", m.group(1), maxsplit=1)[0]
    if "/src/" in path and "/.cargo/" not in path:
        return "plangate"
    return "(unknown)"


def load(path):
    d = json.load(open(path))
    table = d["ftbl"]
    out = collections.Counter()
    for pp in d["pps"]:
        texts = [table[i] for i in pp["fs"]]
        # The server's threads run tokio's multi-thread scheduler; the client a current-thread one.
        if not any("scheduler/multi_thread/" in t for t in texts):
            continue
        owner = ("(unknown)", "(unknown)")
        for t in texts:
            name, c = frame(t)
            if c not in CONTAINERS and c != "(unknown)":
                owner = (name, c)
                break
        out[(owner, "n")] += pp["tbk"]
        out[(owner, "b")] += pp["tb"]
    return out


def main():
    calls, few, many = 2 * int(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
    diff = collections.Counter()
    for k in set(few) | set(many):
        diff[k] = many[k] - few[k]
    by_fn = collections.defaultdict(lambda: [0, 0])
    by_crate = collections.defaultdict(lambda: [0, 0])
    for ((name, c), what), v in diff.items():
        i = 0 if what == "n" else 1
        by_fn[f"{c}: {name}"][i] += v
        by_crate[c][i] += v
    total = [sum(v[0] for v in by_crate.values()), sum(v[1] for v in by_crate.values())]
    print(f"copies per call: {total[0] / calls:.2f}, bytes copied per call: {total[1] / calls:.0f}")
    table("crate", by_crate, calls, "{}")
    table("function that copied", by_fn, calls, "`{}`")


def table(what, rows, calls, name_format):
    """Rows of (copies, bytes), per call, most bytes first; those under 0.01 a call left out."""
    print()
    print(f"| {what} | copies per call | bytes copied per call |")
    print("|---|---|---|")
    for name, (n, b) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        if n / calls >= 0.01:
            print(f"| {name_format.format(name)} | {n / calls:.2f} | {b / calls:.0f} |")


if __name__ == "__main__":
    main()

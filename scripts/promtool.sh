#!/usr/bin/env bash
# Prints the path of a promtool (Prometheus' rule checker), for tests/alerts.rs. One on PATH is
# used as is; otherwise promtool alone is unpacked from the Debian package `prometheus` into
# .venv/promtool, once — without installing the package, whose scripts would start a server.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi
dir="$root/.venv/promtool"
bin="$dir/usr/bin/promtool"
if [ ! -x "$bin" ]; then
  mkdir -p "$root/.venv"
  exec 9>"$root/.venv/promtool.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # apt-get download writes to the current directory; the _apt user may not read $tmp.
    chmod 777 "$tmp"
    if ! (cd "$tmp" && apt-get download prometheus >&2 2>/dev/null); then
      apt-get update -qq >&2
      (cd "$tmp" && apt-get download prometheus >&2)
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    mkdir -p "$dir/usr/bin"
    mv "$tmp/x/usr/bin/promtool" "$bin"
  fi
  flock -u 9
fi
echo "$bin"

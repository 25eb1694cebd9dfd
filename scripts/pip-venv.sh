#!/usr/bin/env bash
# Installs PyPI packages into a project-local venv, once (concurrent callers wait for the first),
# and prints the venv's directory. The tests' Python clients come from here.
# Usage: scripts/pip-venv.sh NAME PACKAGE...       e.g. scripts/pip-venv.sh aws "boto3>=1.35"
# The packages are part of the install's identity: a changed list installs again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="$1"; shift
venv="$root/.venv/$name"
stamp="$venv/.installed-$(printf '%s\n' "$@" | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  mkdir -p "$root/.venv"
  exec 9>"$root/.venv/$name.lock"
  flock 9
  if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" >&2
    touch "$stamp"
  fi
  flock -u 9
fi
echo "$venv"

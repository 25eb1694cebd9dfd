#!/usr/bin/env bash
# The project's test command.
#
#   scripts/test.sh          every test: unit, property, integration and end to end
#   scripts/test.sh fast     unit, property and in-process tests: nothing to install but Rust,
#                            a minute on two cores once built
#   scripts/test.sh system   the tests that start real components: Envoy, Redis (one node and a
#                            cluster), OpenSSL certificates, promtool, Python gRPC clients
#
# Further arguments go to `cargo test` (a test name filters).
set -euo pipefail
cd "$(dirname "$0")/.."

# The fast tier: test files that need no program but plangate itself. Every other file of tests/
# is in the system tier, so a new test file runs there until it is listed here.
FAST=(answers_pinned authz_handler aws_fidelity buckets cli config_errors domains engine fuzz
  import_aws layers packaging rls_handler)

tier=all
case "${1:-}" in
  fast | system | all) tier=$1; shift ;;
esac

for name in "${FAST[@]}"; do
  [[ -f tests/$name.rs ]] || { echo "scripts/test.sh: tests/$name.rs does not exist" >&2; exit 2; }
done
targets() {
  local want=$1 f name
  for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    if [[ " ${FAST[*]} " == *" $name "* ]]; then [[ $want == fast ]] && echo "--test $name"
    else [[ $want == system ]] && echo "--test $name"; fi
  done
}

case $tier in
  all) exec cargo test --all-targets "$@" ;;
  # shellcheck disable=SC2046
  fast) exec cargo test --lib --bins $(targets fast) "$@" ;;
  # shellcheck disable=SC2046
  system) exec cargo test $(targets system) "$@" ;;
esac

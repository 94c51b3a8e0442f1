#!/usr/bin/env bash
# Runs every test: the plain build, then under ASan+UBSan, then under TSan.
# Installs what it needs first. Usage: tools/test.sh [--quick]  (--quick: plain build only)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh

configs=("" "--config=asan" "--config=tsan")
[ "${1:-}" = "--quick" ] && configs=("")

passed=0 failed=0 status=0
for config in "${configs[@]}"; do
  echo "=== bazel test ${config:-(plain)} //..."
  log=$(mktemp)
  set +e
  bazel test $config --color=no --curses=no //... 2>&1 | grep --line-buffered -v "linux-sandbox" | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=1
  p=$(grep -cE '^//.* PASSED' "$log" || true)
  f=$(grep -cE '^//.* (FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$log" || true)
  [ "$rc" -eq 0 ] || [ "$f" -gt 0 ] || f=1  # a build failure with no per-target line
  passed=$((passed + p)) failed=$((failed + f))
  rm -f "$log"
done
echo "tests: $passed passed, $failed failed"
exit $status

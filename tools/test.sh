#!/usr/bin/env bash
# Runs every test: the plain build, then under ASan+UBSan, then under TSan, then the tests that
# need root: tshark's decode of a TCP-emulation capture and the SMB2 NEGOTIATE example against
# Samba's smbd; then the verbs suite on soft-RoCE and soft-iWARP inside the QEMU test VM
# (tools/vm, about 1-2 minutes) and the interop scenarios with Linux siw, ksmbd and cifs.ko
# (tools/vm/interop.sh, about 2 minutes); then each libFuzzer target for 60 s (tools/fuzz.sh).
# Installs what it needs first. Usage: tools/test.sh [--quick] [--no-vm]
#   --quick: plain build only, no tshark, no Samba, no VM, no fuzzing;  --no-vm: skip the VM
set -euo pipefail
cd "$(dirname "$0")/.."
configs=("" "--config=asan" "--config=tsan")
vm=1 root_tests=1 fuzz=1
for arg in "$@"; do
  case "$arg" in
    --quick) configs=("") vm=0 root_tests=0 fuzz=0 ;;
    --no-vm) vm=0 ;;
    *) echo "usage: tools/test.sh [--quick] [--no-vm]" >&2; exit 2 ;;
  esac
done
if [ "$root_tests" -eq 1 ]; then tools/install-deps.sh tshark samba; else tools/install-deps.sh; fi

passed=0 failed=0 status=0
runs=()
for config in "${configs[@]}"; do runs+=("$config //..."); done
# Print the load test's numbers (memory per idle connection) from the ASan run.
[ "${#configs[@]}" -gt 1 ] && runs+=("--config=asan --test_output=all //tests/load:load_test")
[ "$root_tests" -eq 1 ] && runs+=("--test_output=all //tests/tcp:tshark_test //tests/stream:samba_test")
# One VM at a time: each needs both cores.
[ "$vm" -eq 1 ] && runs+=("--test_output=all --local_test_jobs=1 //tests/verbs:vm_test //tests/interop:vm_test")
for run in "${runs[@]}"; do
  echo "=== bazel test $run"
  log=$(mktemp)
  set +e
  # shellcheck disable=SC2086
  bazel test --color=no --curses=no $run 2>&1 | grep --line-buffered -v "linux-sandbox" | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=1
  p=$(grep -cE '^//.* PASSED' "$log" || true)
  f=$(grep -cE '^//.* (FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$log" || true)
  [ "$rc" -eq 0 ] || [ "$f" -gt 0 ] || f=1  # a build failure with no per-target line
  passed=$((passed + p)) failed=$((failed + f))
  rm -f "$log"
done
if [ "$fuzz" -eq 1 ]; then
  echo "=== tools/fuzz.sh --seconds 60"
  if tools/fuzz.sh --seconds 60; then passed=$((passed + 1)); else failed=$((failed + 1)) status=1; fi
fi
echo "tests: $passed passed, $failed failed"
exit $status

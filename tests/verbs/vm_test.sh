#!/usr/bin/env bash
# bazel test //tests/verbs:vm_test: boots the QEMU test VM (tools/vm/run.sh) and runs
# guest.sh on soft-RoCE (rxe) and soft-iWARP (siw). Caches downloads and builds in
# $SMBDIRECT_VM_CACHE (default /var/tmp/smbdirect-vm).
set -euo pipefail
export SMBDIRECT_VM_CACHE="${SMBDIRECT_VM_CACHE:-/var/tmp/smbdirect-vm}"
exec tools/vm/run.sh --timeout "${SMBDIRECT_VM_TIMEOUT:-800}" \
  --log "${TEST_UNDECLARED_OUTPUTS_DIR:-/tmp}/vm-console.log" \
  --bin tests/verbs/verbs_test \
  --bin examples/smbdirect_demo \
  --bin tools/bench/smbdirect_bench \
  --file tools/vm/guest/perftest.sh \
  --guest-script tests/verbs/guest.sh

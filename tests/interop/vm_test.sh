#!/usr/bin/env bash
# bazel test //tests/interop:vm_test: tools/vm/interop.sh with the programs Bazel built. Caches
# downloads and kernel module builds in $SMBDIRECT_VM_CACHE (default /var/tmp/smbdirect-vm); keeps
# the capture and the console log in the test's undeclared outputs.
set -euo pipefail
export SMBDIRECT_VM_CACHE="${SMBDIRECT_VM_CACHE:-/var/tmp/smbdirect-vm}"
exec tools/vm/interop.sh --timeout "${SMBDIRECT_VM_TIMEOUT:-300}" --keep "${TEST_UNDECLARED_OUTPUTS_DIR:-/tmp}" \
  tools/smbdcat/smbdcat examples/file_transfer_server examples/file_transfer_client \
  examples/smb2_negotiate examples/smb2_first_message

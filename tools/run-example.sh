#!/usr/bin/env bash
# Builds and runs the main example on the loopback transport; arguments go to the example
# (try --help). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
bazel build --color=no --curses=no -c opt //examples:smbdirect_demo 2>&1 | grep -v "linux-sandbox" >&2
exec bazel-bin/examples/smbdirect_demo "$@"

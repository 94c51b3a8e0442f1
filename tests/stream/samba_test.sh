#!/usr/bin/env bash
# The same smb2::negotiate function that runs over smbdirect::stream gets a valid SMB2 NEGOTIATE
# response from a real server: Samba's smbd, started here on a random 127.0.0.1 port with a
# configuration that has no shares and no guest access (smbd_fixture.sh). Checks the response
# parses (examples/smb2_negotiate exits 0), has NT status 0 and one of the dialects we offered.
# usage: samba_test.sh [SMB2_NEGOTIATE]   (default: the runfile examples/smb2_negotiate)
# Needs root (smbd) and samba (installed with apt-get when missing and root).
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
fixture=$here/smbd_fixture.sh
[[ -f $fixture || -z ${TEST_SRCDIR:-} ]] || fixture=$TEST_SRCDIR/${TEST_WORKSPACE:-smbdirect}/tests/stream/smbd_fixture.sh
# shellcheck source=tests/stream/smbd_fixture.sh
source "$fixture"

fail() { echo "FAIL: $*" >&2; exit 1; }

if ! command -v smbd >/dev/null && [[ ! -x /usr/sbin/smbd ]]; then
  (( EUID == 0 )) || fail "samba is not installed and installing it needs root: apt-get install samba"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends samba >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends samba >/dev/null; }
fi
(( EUID == 0 )) || fail "smbd needs root"

example=${1:-examples/smb2_negotiate}
[[ -x $example || -z ${TEST_SRCDIR:-} ]] || example=$TEST_SRCDIR/${TEST_WORKSPACE:-smbdirect}/$example
[[ -x $example ]] || fail "$example is not an executable"

# Not under TEST_TMPDIR: smbd's unix sockets live in this directory, and Bazel's path is longer
# than a socket path may be (108 bytes); smbd then exits without saying why.
work=$(mktemp -d /tmp/samba_test.XXXXXX)
cleanup() { stop_smbd; rm -rf "$work"; }
trap cleanup EXIT
start_smbd "$work/smbd" || fail "could not start smbd"
echo "smbd $(smbd --version 2>/dev/null || /usr/sbin/smbd --version) on 127.0.0.1:$SMBD_PORT"

out=$work/out.txt
if ! "$example" --tcp "127.0.0.1:$SMBD_PORT" >"$out" 2>&1; then
  cat "$out" >&2
  echo "smbd log tail:" >&2
  tail -n 20 "$SMBD_DIR/smbd.log" | sed 's/^/  | /' >&2
  fail "smb2_negotiate --tcp 127.0.0.1:$SMBD_PORT exited non-zero"
fi
cat "$out"
grep -q '^status: *0x00000000$' "$out" || fail "NT status is not 0"
grep -qE '^dialect: *(2\.0\.2|2\.1|3\.0|3\.0\.2|3\.1\.1) \(0x0[23][0-9]{2}\)$' "$out" || fail "no dialect we offered"
grep -qE '^max read size: *[1-9]' "$out" || fail "MaxReadSize is 0"
echo "PASS: Samba's smbd answered the SMB2 NEGOTIATE"

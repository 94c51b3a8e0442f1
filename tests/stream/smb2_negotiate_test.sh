#!/usr/bin/env bash
# examples/smb2_negotiate over SMB Direct (loopback): smb2::negotiate through smbdirect::stream
# gets a valid response from the in-process test server; usage errors and an unreachable TCP
# server are reported with their exit codes.
set -euo pipefail
example=${1:-examples/smb2_negotiate}
[[ -x $example || -z ${TEST_SRCDIR:-} ]] || example=$TEST_SRCDIR/${TEST_WORKSPACE:-smbdirect}/$example
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$example") || fail "the loopback run exited $?: $out"
echo "$out"
grep -q '^SMB Direct negotiated over the loopback transport$' <<<"$out" || fail "no SMB Direct parameters"
grep -q '^  result: MaxSendSize 1364,' <<<"$out" || fail "no negotiated MaxSendSize"
grep -q '^status: *0x00000000$' <<<"$out" || fail "NT status is not 0"
grep -q '^dialect: *3.0.2 (0x0302)$' <<<"$out" || fail "the test server answers 3.0.2"
grep -q '^test server: answered the NEGOTIATE and saw the client close$' <<<"$out" || fail "server did not finish"

set +e
err=$("$example" --message-id 7 2>&1); rc=$?
[[ $rc -eq 0 ]] && grep -q '^message id: *7$' <<<"$err" || fail "--message-id 7: rc $rc: $err"
err=$("$example" --bogus 2>&1); rc=$?
[[ $rc -eq 2 ]] && grep -q "unknown option --bogus" <<<"$err" || fail "bad usage: rc $rc: $err"
err=$("$example" --tcp 2>&1); rc=$?
[[ $rc -eq 2 ]] || fail "--tcp without a value: rc $rc"
# Port 1 on 127.0.0.1: nothing listens there, so the connect is refused.
err=$("$example" --tcp 127.0.0.1:1 2>&1); rc=$?
[[ $rc -eq 1 ]] && grep -q "error: connecting to 127.0.0.1 port 1" <<<"$err" || fail "refused: rc $rc: $err"
echo "PASS"

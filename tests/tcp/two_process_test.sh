#!/usr/bin/env bash
# Two processes over the TCP emulation transport on 127.0.0.1: smbdcat moves a random file as
# upper-layer messages, by RDMA write and by RDMA read, client to server and server to client
# (and messages both ways at once); then file_transfer_client sends it to file_transfer_server
# by RDMA write and reads it back. Every copy is compared by sha256sum, and each run's throughput
# is printed (MB/s = 10^6 bytes per second of wall time, connection setup included).
#
# usage: two_process_test.sh [SMBDCAT FILE_TRANSFER_SERVER FILE_TRANSFER_CLIENT]
#   Without arguments the binaries come from Bazel's runfiles (bazel test //tests/tcp:...).
#   TWO_PROCESS_TEST_MIB: file size in MiB (default 100); TWO_PROCESS_TEST_TIMEOUT: seconds
#   each process may take (default 120).
set -euo pipefail

if (( $# == 3 )); then
  smbdcat=$1 ft_server=$2 ft_client=$3
elif (( $# == 0 )) && [[ -n ${TEST_SRCDIR:-} ]]; then
  runfiles="$TEST_SRCDIR/${TEST_WORKSPACE:-smbdirect}"
  smbdcat=$runfiles/tools/smbdcat/smbdcat
  ft_server=$runfiles/examples/file_transfer_server
  ft_client=$runfiles/examples/file_transfer_client
else
  echo "usage: $0 SMBDCAT FILE_TRANSFER_SERVER FILE_TRANSFER_CLIENT (or run it under bazel test)" >&2
  exit 2
fi
for binary in "$smbdcat" "$ft_server" "$ft_client"; do
  [[ -x $binary ]] || { echo "error: $binary is not an executable" >&2; exit 1; }
done

mib=${TWO_PROCESS_TEST_MIB:-100}
limit=${TWO_PROCESS_TEST_TIMEOUT:-120}
work=$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/two_process.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

src=$work/source
head -c "$((mib * 1024 * 1024))" /dev/urandom >"$src"
want=$(sha256sum <"$src")
bytes=$(stat -c %s "$src")
echo "file: $mib MiB of random bytes, sha256 ${want%% *}"

# A port nothing listens on: a connection to it is refused. Taken below the kernel's ephemeral
# range, so that no connection's local end (still closing, say) can hold it: a listener's bind
# fails on such a port even with SO_REUSEADDR.
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 21000 ] || ephemeral_low=60000  # a low range: nothing to avoid
free_port() {
  local port
  for _ in {1..100}; do
    port=$((20000 + RANDOM % (ephemeral_low - 20000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "error: no free port found" >&2
  return 1
}

fail() {
  echo "FAIL: $1" >&2
  for f in "$log".*; do
    [[ $f == *.out && $(stat -c %s "$f") -gt 4096 ]] && continue  # a received file, not a log
    echo "--- $f" >&2
    cat "$f" >&2
  done
  exit 1
}

# run NAME MOVED: starts the command in `server` (an array), waits until it says it is
# listening, runs the command in `client` (its stdin: the file when `client_pipe` is set, piped
# through cat, else /dev/null), and requires both to exit 0. MOVED: bytes that crossed.
run() {
  local name=$1 moved=$2
  log=$work/$name
  timeout "$limit" "${server[@]}" </dev/null >"$log.server.out" 2>"$log.server.err" &
  server_pid=$!
  for _ in {1..200}; do
    grep -qs "listening on" "$log.server.out" "$log.server.err" && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  grep -qs "listening on" "$log.server.out" "$log.server.err" || fail "$name: the server did not start listening"
  local start end
  start=$(date +%s%N)
  if [[ -n ${client_pipe:-} ]]; then
    # shellcheck disable=SC2002  # a pipe on purpose: stdin of unknown length, read in pieces
    cat "$src" | timeout "$limit" "${client[@]}" >"$log.client.out" 2>"$log.client.err" || fail "$name: client failed"
  else
    timeout "$limit" "${client[@]}" </dev/null >"$log.client.out" 2>"$log.client.err" || fail "$name: client failed"
  fi
  wait "$server_pid" || fail "$name: server failed"
  server_pid=""
  end=$(date +%s%N)
  awk -v name="$name" -v b="$moved" -v ns="$((end - start))" \
    'BEGIN { printf "%-44s %8.1f MB/s  (%.0f MB in %.3f s)\n", name, b / ns * 1e3, b / 1e6, ns / 1e9 }'
}

# same FILE...: each file must equal the source.
same() {
  local f
  for f in "$@"; do
    [[ $(sha256sum <"$f") == "$want" ]] || fail "$f differs from the source"
  done
}

for mode in messages write read; do
  port=$(free_port)
  server=("$smbdcat" --listen 127.0.0.1 --port "$port" --output "$work/to_server")
  client=("$smbdcat" 127.0.0.1 --port "$port" --mode "$mode" --send "$src")
  run "smbdcat $mode, client -> server" "$bytes"
  same "$work/to_server"

  port=$(free_port)
  server=("$smbdcat" --listen 127.0.0.1 --port "$port" --mode "$mode" --send "$src")
  client=("$smbdcat" 127.0.0.1 --port "$port" --output "$work/to_client")
  run "smbdcat $mode, server -> client" "$bytes"
  same "$work/to_client"
done

# Pipes: stdin of unknown length in, stdout out.
port=$(free_port)
server=("$smbdcat" --listen 127.0.0.1 --port "$port")
client=("$smbdcat" 127.0.0.1 --port "$port" --send -)
client_pipe=1 run "smbdcat messages, stdin pipe -> stdout" "$bytes"
same "$log.server.out"

port=$(free_port)
server=("$smbdcat" --listen 127.0.0.1 --port "$port" --mode write --send "$src" --output "$work/to_server")
client=("$smbdcat" 127.0.0.1 --port "$port" --mode read --send "$src" --output "$work/to_client")
run "smbdcat write + read, both ways at once" "$((2 * bytes))"
same "$work/to_server" "$work/to_client"

port=$(free_port)
server=("$ft_server" --port "$port" --output "$work/ft_server")
client=("$ft_client" --port "$port" --output "$work/ft_client" "$src")
run "file_transfer: RDMA write, then read back" "$((2 * bytes))"
same "$work/ft_server" "$work/ft_client"

echo "PASS"

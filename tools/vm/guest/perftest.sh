#!/bin/sh
# Guest script for tools/vm/run.sh: perftest baseline on the current RDMA device.
# Runs ibv_devinfo, then each run of $PERFTEST_RUNS (TEST:BYTES:ITERATIONS, space-separated)
# as server (background) and client in this VM, both on $RDMA_ADDR, and prints the bandwidth
# lines. Exits non-zero on failure.
#   tools/vm/run.sh --guest-script tools/vm/guest/perftest.sh
RUNS=${PERFTEST_RUNS:-"ib_send_bw:65536:200 ib_write_bw:65536:200"}
PORT=18515
LIMIT=60  # seconds, per server or client

: "${RDMA_DEVICE:?run me with tools/vm/run.sh}"
status=0

echo "--- ibv_devinfo -d $RDMA_DEVICE"
timeout 20 ibv_devinfo -d "$RDMA_DEVICE" || { echo "ibv_devinfo failed"; exit 1; }

# wait_listen PORT: waits until something listens on TCP PORT (perftest's out-of-band socket,
# or siw's kernel socket behind an rdma_cm listener).
wait_listen() {
  hex=$(printf ':%04X ' "$1")
  i=0
  while [ $i -lt 100 ]; do
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep "$hex" | awk '$4 == "0A"' | grep -q . && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

for run in $RUNS; do
  t=${run%%:*}
  rest=${run#*:}
  SIZE=${rest%%:*}
  ITERS=${rest#*:}
  echo "--- $t: $RDMA_KIND, $SIZE B x $ITERS, flags: $RDMA_PERFTEST_FLAGS"
  # shellcheck disable=SC2086
  timeout $LIMIT $t -d "$RDMA_DEVICE" $RDMA_PERFTEST_FLAGS -F -s $SIZE -n $ITERS -p $PORT \
    >/tmp/$t.server.log 2>&1 &
  server=$!
  wait_listen $PORT || echo "($t server not listening after 10 s; trying anyway)"
  # shellcheck disable=SC2086
  timeout $LIMIT $t -d "$RDMA_DEVICE" $RDMA_PERFTEST_FLAGS -F -s $SIZE -n $ITERS -p $PORT \
    "$RDMA_ADDR" >/tmp/$t.client.log 2>&1
  client_rc=$?
  wait $server
  server_rc=$?
  if [ $client_rc = 0 ] && [ $server_rc = 0 ]; then
    grep -A1 '#bytes' /tmp/$t.client.log
    awk -v t=$t -v k="$RDMA_KIND" '/#bytes/ { getline; printf "PERFTEST %s %s %s B x %s: peak %s MB/s, average %s MB/s\n", k, t, $1, $2, $3, $4 }' \
      /tmp/$t.client.log
  else
    echo "$t FAILED: client exit $client_rc, server exit $server_rc"
    echo "--- client log"; cat /tmp/$t.client.log
    echo "--- server log"; cat /tmp/$t.server.log
    status=1
  fi
  PORT=$((PORT + 1))
done
exit $status

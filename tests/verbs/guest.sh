#!/bin/sh
# Runs inside the test VM (tools/vm/run.sh), once per RDMA device: the verbs conformance
# suite, the demo, and SMB Direct throughput next to perftest's on the same device and boot.
# Exit status: non-zero if the suite, the demo or the benchmark failed (a perftest failure
# only loses the baseline).
: "${RDMA_DEVICE:?run me with tools/vm/run.sh}"
status=0

step() {
  name=$1
  shift
  echo "=== $RDMA_KIND: $name"
  if timeout 150 "$@"; then
    echo "=== $RDMA_KIND: $name: ok"
  else
    echo "=== $RDMA_KIND: $name: FAILED (exit $?)"
    status=1
  fi
}

step "conformance suite" verbs_test
if [ "$RDMA_KIND" = rxe ]; then  # rxe has memory windows: run once more with plain regions
  step "conformance suite, no memory windows" env SMBDIRECT_TEST_MEMORY_WINDOWS=0 verbs_test
fi
step "demo" smbdirect_demo --transport verbs --address "$RDMA_ADDR" --device "$RDMA_DEVICE" \
  --file-size 8388608 --messages 32 --max-message 262144
step "demo over IPv6" smbdirect_demo --transport verbs --address "$RDMA_ADDR6" --quiet \
  --file-size 1048576 --messages 8 --max-message 65536

# Throughput at perftest's message size (64 KiB, 200 iterations): upper-layer messages with
# the default MaxSendSize (1364: 49 fragments each), with one fragment per message, and RDMA
# writes. Then perftest itself.
bench() { step "bench $*" smbdirect_bench --transport verbs --address "$RDMA_ADDR" --size 65536 --iterations 200 "$@"; }
bench --op send
bench --op send --max-send-size 65560 --max-receive-size 65560 --credits 32
bench --op write
bench --op read
sh "$SMBDIRECT_FILES/perftest.sh" || echo "=== $RDMA_KIND: perftest baseline failed (not counted)"
exit $status

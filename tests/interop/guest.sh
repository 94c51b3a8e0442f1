#!/bin/sh
# Runs inside the test VM (tools/vm/run.sh), once per RDMA device: smbdirect against independent
# implementations of the same protocols.
#   siw only:  our TCP emulation (plain socket, our MPA/DDP/RDMAP) <-> our verbs code on Linux
#              soft-iWARP, both ways: smbdcat (fragmented messages both ways at once) and
#              file_transfer (RDMA write, then RDMA read back), all checked by CRC-64 and cmp
#   both:      our client -> Linux ksmbd (SMB Direct, then an SMB2 NEGOTIATE); on siw also from
#              our TCP emulation
#   both:      Linux cifs.ko (mount -t cifs -o rdma) -> our server (smb2_first_message)
# On siw every exchange crosses the loopback interface as TCP: tcpdump saves it to
# $SMBDIRECT_OUTPUT/siw.pcap for tshark on the host. (rxe hands packets between two local
# queue pairs inside the driver, so there is nothing to capture on rxe.)
# Lines "=== interop <kind>: <scenario>: ok|FAILED ..." are the results; the exit status is
# non-zero if any scenario failed.
: "${RDMA_DEVICE:?run me with tools/vm/run.sh}"
status=0
A=$RDMA_ADDR
work=/tmp/interop-$RDMA_KIND
mkdir -p "$work"

ok() { echo "=== interop $RDMA_KIND: $1: ok"; }
failed() { echo "=== interop $RDMA_KIND: $1: FAILED ($2)"; status=1; }

# wait_for FILE TEXT: up to 10 s for TEXT to appear in FILE.
wait_for() {
  i=0
  while [ $i -lt 100 ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

# pair NAME SERVER_LOG "SERVER COMMAND" "CLIENT COMMAND": starts the server, waits for its
# "listening" line, runs the client; both must exit 0 within 120 s. Commands are word-split.
pair() {
  name=$1 slog=$2
  echo "=== interop $RDMA_KIND: $name"
  # shellcheck disable=SC2086
  timeout 120 $3 >"$slog" 2>&1 &
  spid=$!
  if ! wait_for "$slog" "listening"; then
    cat "$slog"
    kill $spid 2>/dev/null
    failed "$name" "the server did not start"
    return
  fi
  # shellcheck disable=SC2086
  timeout 120 $4
  client_rc=$?
  wait $spid
  server_rc=$?
  cat "$slog"
  if [ $client_rc = 0 ] && [ $server_rc = 0 ]; then
    ok "$name"
  else
    failed "$name" "client exit $client_rc, server exit $server_rc"
  fi
}

if [ "$RDMA_KIND" = siw ]; then
  # A 64 MiB buffer: under emulation the default 2 MiB one overflowed (drops) now and then.
  tcpdump -Z root -i lo -s 0 -B 65536 -U -w "$SMBDIRECT_OUTPUT/siw.pcap" tcp port 5445 >"$work/tcpdump.log" 2>&1 &
  capture=$!
  wait_for "$work/tcpdump.log" "listening on" || echo "warning: tcpdump did not start: $(cat "$work/tcpdump.log")"
fi

# ------------------------------------------------------------------------------------------
# 1. TCP emulation <-> soft-iWARP (siw): both directions, port 5445.
if [ "$RDMA_KIND" = siw ]; then
  head -c 1500000 /dev/urandom >"$work/a.bin"
  head -c 1000000 /dev/urandom >"$work/b.bin"
  # 200,000-byte messages: 147 fragments each at MaxSendSize 1364.
  cat_opts="--port 5445 --mode messages --message-size 200000"
  for way in "verbs tcp" "tcp verbs"; do
    set -- $way
    pair "smbdcat, $1 server <- $2 client, messages both ways" "$work/cat-server.log" \
      "smbdcat --listen $A --transport $1 $cat_opts --send $work/a.bin --output $work/b.copy" \
      "smbdcat --transport $2 $cat_opts --send $work/b.bin --output $work/a.copy $A"
    cmp "$work/a.bin" "$work/a.copy" && cmp "$work/b.bin" "$work/b.copy" ||
      failed "smbdcat, $1 server <- $2 client" "cmp found a difference"
    rm -f "$work/a.copy" "$work/b.copy"
    pair "file_transfer, $1 server <- $2 client, RDMA write and read" "$work/ft-server.log" \
      "file_transfer_server --transport $1 --address $A --port 5445 --output $work/a.server" \
      "file_transfer_client --transport $2 --address $A --port 5445 --output $work/a.client $work/a.bin"
    cmp "$work/a.bin" "$work/a.server" && cmp "$work/a.bin" "$work/a.client" ||
      failed "file_transfer, $1 server <- $2 client" "cmp found a difference"
    rm -f "$work/a.server" "$work/a.client"
  done
fi

# ------------------------------------------------------------------------------------------
# 2. Our client -> Linux ksmbd. ksmbd picks its RDMA port when it loads: 445, or 5445 when an
# iWARP device exists; so it is loaded per device, after the device, and unloaded after.
mkdir -p /etc/ksmbd /srv/share
cat >/etc/ksmbd/ksmbd.conf <<'EOF'
[global]
	netbios name = SMBDIRECT-VM
	server multi channel support = no
[share]
	path = /srv/share
	read only = yes
	guest ok = yes
EOF
if modprobe ksmbd; then
  ksmbd.mountd -n >"$work/ksmbd.log" 2>&1 &
  mountd=$!
  # ksmbd starts its listeners when ksmbd.mountd has sent its configuration: wait for TCP 445
  # (0x01BD) in state LISTEN (0A), on IPv6 or IPv4.
  i=0
  while [ $i -lt 100 ] && ! grep -q ":01BD 0*:0000 0A" /proc/net/tcp6 /proc/net/tcp; do
    sleep 0.1
    i=$((i + 1))
  done
  for t in verbs tcp; do
    [ $t = tcp ] && [ "$RDMA_KIND" != siw ] && continue  # TCP emulation is iWARP framing
    port=""
    [ $t = tcp ] && port=:5445
    name="our $t client -> ksmbd: SMB Direct and SMB2 NEGOTIATE"
    echo "=== interop $RDMA_KIND: $name"
    # ksmbd may still be creating its RDMA listener: a refused connection is retried.
    n=0
    while :; do
      timeout 60 smb2_negotiate --smbdirect "$A$port" --transport $t >"$work/negotiate.log" 2>&1
      rc=$?
      n=$((n + 1))
      grep -q "rejected\|refused" "$work/negotiate.log" && [ $rc != 0 ] && [ $n -lt 10 ] || break
      sleep 0.5
    done
    cat "$work/negotiate.log"
    if [ $rc = 0 ]; then ok "$name"; else failed "$name" "exit $rc"; fi
  done
  ksmbd.control --shutdown >/dev/null 2>&1
  kill $mountd 2>/dev/null
  wait $mountd
  echo "--- ksmbd.mountd log"
  cat "$work/ksmbd.log"
  i=0
  while ! rmmod ksmbd 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
else
  failed "ksmbd" "modprobe ksmbd failed"
fi

# ------------------------------------------------------------------------------------------
# 3. Linux cifs.ko -> our server. cifs tries port 5445, then 445; our server listens where
# SMB Direct servers do on this device (445 on rxe, 5445 on siw). The mount must fail: we
# answer its SMB2 NEGOTIATE with STATUS_NOT_SUPPORTED.
name="cifs.ko -> our server: SMB Direct and the first SMB2 message"
echo "=== interop $RDMA_KIND: $name"
timeout 120 smb2_first_message --transport verbs --address "$A" --connections 1 >"$work/first.log" 2>&1 &
spid=$!
if wait_for "$work/first.log" "listening" && modprobe cifs; then
  mkdir -p /mnt/cifs
  timeout 90 mount.cifs "//$A/share" /mnt/cifs -o rdma,vers=3.1.1,username=smbdirect,password=smbdirect \
    >"$work/mount.log" 2>&1
  mount_rc=$?
  wait $spid
  server_rc=$?
  cat "$work/first.log"
  echo "--- mount.cifs (exit $mount_rc; it must fail)"
  cat "$work/mount.log"
  echo "--- kernel log (cifs)"
  dmesg | grep -i "cifs\|smbd\|smb_direct" | tail -n 20
  if [ $mount_rc = 0 ]; then
    umount /mnt/cifs
    failed "$name" "the mount succeeded against a server that speaks no SMB2"
  elif [ $server_rc != 0 ]; then
    failed "$name" "server exit $server_rc"
  elif ! grep -q "closed by the client" "$work/first.log"; then
    failed "$name" "the server did not see the client close"
  else
    ok "$name"
  fi
else
  cat "$work/first.log"
  kill $spid 2>/dev/null
  failed "$name" "the server did not start, or modprobe cifs failed"
fi
rmmod cifs 2>/dev/null

if [ -n "${capture:-}" ]; then
  # tcpdump writes each packet as it reads it (-U), but under emulation it lags behind the
  # kernel: stop it only once the file has stopped growing for a second (at most 15 s).
  last=-1 still=0 i=0
  while [ $still -lt 5 ] && [ $i -lt 75 ]; do
    size=$(wc -c <"$SMBDIRECT_OUTPUT/siw.pcap")
    if [ "$size" = "$last" ]; then still=$((still + 1)); else still=0 last=$size; fi
    sleep 0.2
    i=$((i + 1))
  done
  kill -INT $capture
  wait $capture
  cat "$work/tcpdump.log"
fi
exit $status

#!/usr/bin/env bash
# Captures one smbdirect_demo session over the TCP transport on lo and has tshark decode it: no
# malformed frame or expert error, MPA Request and Reply, every FPDU's CRC32c good, SMB Direct
# negotiate and data messages, RDMA Write / Read Request / Read Response. An independent decoder
# catches what our unit tests, written from our own reading of the RFCs, cannot.
# usage: tshark_test.sh [DEMO]  (default: the runfile examples/smbdirect_demo; TSHARK_TEST_PORT
#        picks the port, default a random free one) | tshark_test.sh --pcap FILE  (check only)
# Capturing needs root (CAP_NET_RAW); tshark is installed with apt-get when missing and root.
set -euo pipefail

work=$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/tshark_test.XXXXXX")
cap_pid=""
cleanup() { [[ -n $cap_pid ]] && kill -INT "$cap_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() {  # fail MESSAGE [DETAILS]: keeps the capture for a human to open in Wireshark
  echo "FAIL: $1" >&2
  [[ -n ${2:-} ]] && printf '%s\n' "$2" | head -40 | sed 's/^/  | /' >&2
  local keep=${TEST_UNDECLARED_OUTPUTS_DIR:-${TMPDIR:-/tmp}}/tshark_test.pcapng
  [[ -z ${pcap_given:-} && -s ${pcap:-} ]] && cp "$pcap" "$keep" && echo "capture kept: $keep" >&2
  exit 1
}

if ! command -v tshark >/dev/null || ! command -v dumpcap >/dev/null; then
  (( EUID == 0 )) || fail "tshark is not installed and installing it needs root: apt-get install tshark"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q tshark >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q tshark >/dev/null; }
fi

if [[ ${1:-} == --pcap ]]; then
  pcap=${2:?--pcap needs a file} pcap_given=1
else
  demo=${1:-examples/smbdirect_demo}
  [[ -x $demo || -z ${TEST_SRCDIR:-} ]] || demo=$TEST_SRCDIR/${TEST_WORKSPACE:-smbdirect}/$demo
  [[ -x $demo ]] || fail "$demo is not an executable (usage: $0 [DEMO] | --pcap FILE)"
  # Ports below the kernel's ephemeral range: no closing connection's local end can hold one.
  ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$ephemeral_low" -gt 21000 ] || ephemeral_low=60000  # a low range: nothing to avoid
  pcap=$work/capture.pcapng
  # A few tries: lo can drop packets under load, and a capture with holes cannot be judged.
  for attempt in 1 2 3; do
    port=${TSHARK_TEST_PORT:-}  # e.g. 5445, to see the Artemis clash handled
    for _ in {1..100}; do
      [[ -n $port ]] && break  # a port nothing listens on; high, so no dissector claims it
      p=$((20000 + RANDOM % (ephemeral_low - 20000)))
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { port=$p; break; }
    done
    [[ -n $port ]] || fail "no free port found"
    rm -f "$pcap"
    dumpcap -i lo -f "tcp port $port" -B 64 -w "$pcap" 2>"$work/dumpcap.err" &
    cap_pid=$!
    # dumpcap prints "File:" only once the filter is set and the file open: from then on
    # nothing is missed, and the MPA Request (which the heuristic needs) is in the capture.
    for _ in {1..200}; do
      grep -qs '^File:' "$work/dumpcap.err" && break
      kill -0 "$cap_pid" 2>/dev/null || break
      sleep 0.05
    done
    grep -q '^File:' "$work/dumpcap.err" || fail "dumpcap did not start capturing" "$(cat "$work/dumpcap.err")"
    timeout 120 "$demo" --transport tcp --address 127.0.0.1 --port "$port" --quiet --messages 8 \
      --max-message 65536 --file-size 1048576 >"$work/demo.out" 2>&1 ||
      fail "the demo failed" "$(cat "$work/demo.out")"
    sleep 0.5  # let dumpcap drain the kernel buffer before it is stopped
    kill -INT "$cap_pid"; wait "$cap_pid" || fail "dumpcap failed" "$(cat "$work/dumpcap.err")"
    cap_pid=""
    dropped=$(sed -n 's/.*received\/dropped on interface.*: [0-9]*\/\([0-9]*\) .*/\1/p' "$work/dumpcap.err")
    [[ ${dropped:-0} == 0 ]] && break
    echo "capture dropped $dropped packets (attempt $attempt), retrying"
    (( attempt < 3 )) || fail "every capture dropped packets" "$(cat "$work/dumpcap.err")"
  done
  echo "demo: $(cat "$work/demo.out")"
fi

# Artemis claims port 5445 (the SMB Direct iWARP port); the heuristics are on by default but
# a user profile may have turned them off.
ts() { tshark -r "$pcap" --disable-protocol artemis --enable-heuristic iwarp_mpa_tcp \
         --enable-heuristic smb_direct_iwarp "$@" 2>>"$work/tshark.err"; }
count() { ts -Y "$1" | wc -l; }  # frames matching a display filter
frames=$(ts | wc -l)
(( frames > 0 )) || fail "$pcap holds no frames" "$(cat "$work/tshark.err" 2>/dev/null)"
# Some experts (MPA's) are raised without a tree item, so only the expert tap sees all of them.
experts=$(ts -q -z expert)
errors=$(sed -n 's/^Errors (\([0-9]*\)).*/\1/p' <<<"$experts")
warnings=$(sed -n 's/^Warns (\([0-9]*\)).*/\1/p' <<<"$experts")
malformed=$(count _ws.malformed)
(( malformed == 0 && ${errors:-0} == 0 )) ||
  fail "$malformed malformed frames, ${errors:-0} expert errors" "$(ts -Y '_ws.malformed'; echo "$experts")"
lost=$(count 'tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment')
(( lost == 0 )) || fail "the capture has holes ($lost frames): rerun" "$(ts -Y 'tcp.analysis.lost_segment')"

# One verbose pass for what display filters cannot count: several FPDUs share a TCP segment.
ts -V -O iwarp_mpa,iwarp_ddp_rdmap,smb_direct >"$work/verbose.txt"
tally() { grep -cE "$1" "$work/verbose.txt" || true; }
mpa="iwarp_mpa.rev,iwarp_mpa.marker_flag,iwarp_mpa.crc_flag,iwarp_mpa.rej_flag,iwarp_mpa.pdlength"
fields() {  # fields FILTER NAME,NAME...: a header line, then one line per matching frame
  local names name args=(); IFS=, read -ra names <<<"$2"
  for name in "${names[@]}"; do args+=(-e "$name"); done
  ts -Y "$1" -T fields -E header=y -E occurrence=f "${args[@]}"
}
for check in "iwarp_mpa.req|MPA Request (capture started late?)" "iwarp_mpa.rep|MPA Reply" \
    "smb_direct.negotiate_request|SMB Direct NegotiateRequest" \
    "smb_direct.negotiate_response|SMB Direct NegotiateResponse" \
    "smb_direct.data_length > 0|SMB Direct DataMessage with data"; do
  (( $(count "${check%%|*}") >= 1 )) || fail "no ${check#*|}" "$(ts | head -30)"
done
(( $(count 'iwarp_mpa.rej_flag == 1') == 0 )) || fail "the MPA Reply rejects" "$(fields iwarp_mpa.rep "$mpa")"
fpdus=$(tally '^    FPDU$')
good=$(tally '\(Good CRC32\)')
bad=$(tally '\(Bad CRC32')
(( fpdus > 0 )) || fail "no FPDU decoded" "$(ts | head -20)"
(( bad == 0 )) || fail "$bad FPDUs with a bad CRC32c" \
  "$(awk '/^Frame /{ f = $2 } /Bad CRC32/{ sub(/^ +/, ""); print "frame " f " " $0 }' "$work/verbose.txt")"
if (( $(count 'iwarp_mpa.crc_flag == 1') > 0 )); then
  (( good == fpdus )) || fail "$fpdus FPDUs but $good good CRCs" "$(grep -n 'CRC' "$work/verbose.txt")"
else
  echo "note: CRC was not negotiated, so no CRC was checked"
fi

ops=$(ts -T fields -e iwarp_rdma.opcode -E occurrence=a -E aggregator=' ' | tr ' ' '\n' | grep . | sort | uniq -c)
for op in 0x00:Write 0x01:"Read Request" 0x02:"Read Response"; do
  grep -q " ${op%%:*}$" <<<"$ops" || fail "no RDMA ${op#*:} (opcode ${op%%:*})" "$ops"
done
! grep -q ' 0x07$' <<<"$ops" || fail "an RDMAP Terminate was sent" "$(grep -A30 'Terminate' "$work/verbose.txt")"

fields 'iwarp_mpa.req || iwarp_mpa.rep' "frame.number,$mpa" |
  awk 'NR == 1 { print "MPA frames:  frame  rev  M  C  R  private data" }
       NR > 1 { printf "%18s %4s %2s %2s %2s  %s bytes\n", $1, $2, $3, $4, $5, $6 }'
fields smb_direct.negotiate_response smb_direct.status,smb_direct.version.negotiated,smb_direct.credits.requested,smb_direct.credits.granted,smb_direct.max_read_write_size,smb_direct.preferred_send_size,smb_direct.max_receive_size,smb_direct.max_fragmented_size |
  awk 'NR == 2 { printf "NegotiateResponse: status %s, version %s, credits requested %s granted %s,\n" \
    "  MaxReadWriteSize %s, PreferredSendSize %s, MaxReceiveSize %s, MaxFragmentedSize %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
echo "RDMAP messages (FPDUs): $(awk 'BEGIN { split("Write,Read Request,Read Response,Send", n, ",") }
  { op = substr($2, 3) + 1; printf "%s%s %s", (NR > 1 ? ", " : ""), $1, (op in n ? n[op] : "opcode " $2) }' <<<"$ops")"
echo "frames: $frames, MPA FPDUs: $fpdus (CRC good: $good), SMB Direct decoded:" \
  "$(tally '^    NegotiateRequest$') NegotiateRequest, $(tally '^    NegotiateResponse$') NegotiateResponse," \
  "$(tally '^    DataMessage$') DataMessage (tshark decodes only the first Send of a TCP segment)"
# Expected: tshark 4.0 knows MPA rev 1 only; RFC 6581's rev 2 also sets the Enhanced bit in Res.
echo "expert warnings: ${warnings:-0}"
sed -n '/^Warns/,/^$/p' <<<"$experts" | sed -n '4,$p' | sed '/^$/d; s/^ */  /'
echo "PASS"

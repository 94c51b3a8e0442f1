#!/usr/bin/env bash
# Has tshark decode the interop capture (tests/interop/guest.sh on siw: every connection on TCP
# port 5445 through the VM's loopback) and checks that it decodes as iWARP and SMB Direct:
#   - no hole in any connection, no malformed frame and no expert error in any layer we produce
#     or carry (MPA, DDP/RDMAP, SMB Direct, SMB2), and no FPDU with a bad CRC32c;
#   - every connection has one SMB Direct NegotiateRequest and one NegotiateResponse;
#   - RDMA Write, Read Request and Read Response all occur, and no RDMAP Terminate;
#   - at least EXPECTED connections (default 7).
# Then prints one line per connection: both negotiate messages and the SMB2 commands seen.
# SPNEGO is not decoded: tshark 4.0 flags the security blob in ksmbd's SMB2 NEGOTIATE response
# (inside SMB2, built by the kernel) as malformed; the count is printed as a note.
#
# usage: check_capture.sh PCAP [EXPECTED]
set -euo pipefail
pcap=${1:?usage: check_capture.sh PCAP [EXPECTED]}
expected=${2:-7}
[[ -s $pcap ]] || { echo "FAIL: no capture at $pcap" >&2; exit 1; }
command -v tshark >/dev/null || { echo "FAIL: tshark is not installed (apt-get install tshark)" >&2; exit 1; }

fail() {
  echo "FAIL: $1" >&2
  [[ -n ${2:-} ]] && sed 's/^/  | /' <<<"$2" >&2
  exit 1
}
# TCP port 5445 is SMB Direct's iWARP port; tshark also maps it to ActiveMQ Artemis.
# Capturing on the VM's two CPUs reorders some segments: reassemble them in sequence order.
ts() { tshark -r "$pcap" --disable-protocol artemis --disable-protocol spnego -o tcp.reassemble_out_of_order:TRUE \
         "$@" 2>/dev/null; }
count() { ts -Y "$1" | wc -l; }

frames=$(ts | wc -l)
(( frames > 0 )) || fail "tshark decodes no frame in $pcap"
experts=$(ts -q -z expert)
errors=$(sed -n 's/^Errors (\([0-9]*\)).*/\1/p' <<<"$experts")
malformed=$(count _ws.malformed)
(( malformed == 0 && ${errors:-0} == 0 )) ||
  fail "$malformed malformed frames, ${errors:-0} expert errors" "$(ts -Y _ws.malformed; echo "$experts")"
bad_crc=$(ts -V -O iwarp_mpa | grep -c 'Bad CRC32' || true)
(( bad_crc == 0 )) || fail "$bad_crc FPDUs with a bad CRC32c"
# A hole is a byte range of a connection that no captured segment holds (reordering is not one).
# SYN and FIN each take one sequence number.
holes=$(ts -T fields -e tcp.stream -e tcp.srcport -e tcp.seq -e tcp.len -e tcp.flags.syn -e tcp.flags.fin |
  sort -k1,1n -k2,2n -k3,3n |
  awk '$1 " " $2 != key { key = $1 " " $2; end = $3 + $4 + $5 + $6; next }
       $3 > end { holes++ } $3 + $4 + $5 + $6 > end { end = $3 + $4 + $5 + $6 } END { print holes + 0 }')
(( holes == 0 )) || fail "the capture has $holes holes (segments tcpdump missed): rerun"

ops=$(ts -T fields -e iwarp_rdma.opcode -E occurrence=a -E aggregator=' ' | tr ' ' '\n' | grep . | sort | uniq -c)
for op in 0x00:Write 0x01:"Read Request" 0x02:"Read Response"; do
  grep -q " ${op%%:*}$" <<<"$ops" || fail "no RDMA ${op#*:} (opcode ${op%%:*})" "$ops"
done
! grep -q ' 0x07$' <<<"$ops" || fail "an RDMAP Terminate was sent" "$ops"

# One row per SMB Direct negotiate message: stream, ports, fields.
negotiation=$(ts -Y 'smb_direct.negotiate_request || smb_direct.negotiate_response' -T fields -E occurrence=f \
  -e tcp.stream -e smb_direct.negotiate_response -e tcp.srcport -e tcp.dstport -e smb_direct.status \
  -e smb_direct.credits.requested -e smb_direct.credits.granted -e smb_direct.preferred_send_size \
  -e smb_direct.max_receive_size -e smb_direct.max_fragmented_size -e smb_direct.max_read_write_size)
streams=$(ts -T fields -e tcp.stream | sort -un | wc -l)
(( streams >= expected )) || fail "$streams connections, expected at least $expected" "$negotiation"
problems=$(awk -F'\t' -v n="$streams" '
  { if ($2 != "") { rsp[$1]++; if ($5 != "0x00000000") bad[$1] = $5 } else req[$1]++ }
  END { for (s = 0; s < n; s++) {
          if (req[s] != 1 || rsp[s] != 1) print "connection " s ": " req[s] + 0 " requests, " rsp[s] + 0 " responses"
          if (s in bad) print "connection " s ": NegotiateResponse status " bad[s] } }' <<<"$negotiation")
[[ -z $problems ]] || fail "SMB Direct negotiation is not one request and one response per connection" "$problems"

smb2=$(ts -Y smb2 -T fields -E occurrence=a -E aggregator=, -e tcp.stream -e smb2.cmd -e smb2.flags.response \
  -e smb2.nt_status -e smb2.dialect)
echo "connections (TCP port 5445), as tshark decodes them:"
awk -F'\t' -v n="$streams" '
  FNR == NR {  # the SMB2 rows
    if ($1 == "") next
    what = ($3 == "1" || $3 == "True") ? "response" : "request"
    s2[$1] = s2[$1] sprintf("; %s%s%s", what, ($4 != "" ? " status " $4 : ""), ($5 != "" ? " dialects " $5 : ""))
    next
  }
  $2 == "" { client[$1] = $3
             req[$1] = sprintf("CreditsRequested %s, PreferredSendSize %s, MaxReceiveSize %s, MaxFragmentedSize %s",
                               $6, $8, $9, $10); next }
  { rsp[$1] = sprintf("CreditsRequested %s, CreditsGranted %s, PreferredSendSize %s, MaxReceiveSize %s, " \
                      "MaxFragmentedSize %s, MaxReadWriteSize %s", $6, $7, $8, $9, $10, $11) }
  END {
    for (s = 0; s < n; s++) {
      printf "  %d (client port %s)\n    NegotiateRequest:  %s\n    NegotiateResponse: %s\n", s, client[s], req[s], rsp[s]
      if (s in s2) printf "    SMB2 NEGOTIATE%s\n", substr(s2[s], 2)
    }
  }' <(printf '%s\n' "$smb2") <(printf '%s\n' "$negotiation")
echo "RDMAP messages: $(awk '{ printf "%s%s x %s", (NR > 1 ? ", " : ""), $2, $1 }' <<<"$ops") (0x00 Write, 0x01 Read Request, 0x02 Read Response, 0x03-0x06 Send variants)"
spnego=$(tshark -r "$pcap" --disable-protocol artemis -Y _ws.malformed 2>/dev/null | wc -l)
echo "frames: $frames; malformed with SPNEGO decoded as well: $spnego (the security blob of ksmbd's NEGOTIATE response)"
echo "PASS"

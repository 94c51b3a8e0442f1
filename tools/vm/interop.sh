#!/usr/bin/env bash
# Interoperability run: smbdirect against Linux soft-iWARP, ksmbd and cifs.ko inside the test VM
# (tests/interop/guest.sh), then tshark's verdict on the capture of every siw connection
# (tests/interop/check_capture.sh). See docs/interop.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tools/vm/interop.sh [--devices "rxe siw"] [--timeout SECONDS] [--keep DIR]
                           [SMBDCAT FILE_TRANSFER_SERVER FILE_TRANSFER_CLIENT SMB2_NEGOTIATE SMB2_FIRST_MESSAGE]

Boots the test VM (tools/vm/run.sh) and, per RDMA device, runs:
  siw:       TCP emulation <-> verbs on Linux siw, both ways (smbdcat messages both ways at once,
             file_transfer RDMA write and read), verified
  rxe, siw:  smb2_negotiate --smbdirect -> Linux ksmbd (plus TCP emulation -> ksmbd on siw)
  rxe, siw:  Linux cifs.ko (mount -t cifs -o rdma) -> smb2_first_message
then decodes the siw capture with tshark. Without the five programs it builds them with Bazel.

  --devices LIST    RDMA devices, in order (default "rxe siw"; the capture needs siw)
  --timeout SECS    limit for each device's VM run, boot included (default 300)
  --keep DIR        keep the capture (siw.pcap) and the console log in DIR
  -h, --help        this text

Needs root the first time (installs qemu, tcpdump, ksmbd-tools, cifs-utils and tshark with apt;
builds ksmbd.ko, cifs.ko and siw.ko for the VM's kernel into the VM cache, ~1 minute).
Exit status: 0 when every scenario passed and the capture decodes cleanly.
EOF
}

devices="rxe siw"
timeout_s=300
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --devices) devices="${2:?--devices needs a list}"; shift 2 ;;
    --timeout) timeout_s="${2:?--timeout needs seconds}"; shift 2 ;;
    --keep) keep="${2:?--keep needs a folder}"; shift 2 ;;
    -*) usage >&2; echo "interop: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
cd "$(dirname "$0")/../.."
if [ $# -eq 5 ]; then
  programs=("$@")
elif [ $# -eq 0 ]; then
  tools/install-deps.sh
  echo "interop: building the programs" >&2
  bazel build --color=no --curses=no //tools/smbdcat //examples:file_transfer_server //examples:file_transfer_client \
    //examples:smb2_negotiate //examples:smb2_first_message 2>&1 | grep -v linux-sandbox >&2
  bin=$(bazel info bazel-bin 2>/dev/null)
  programs=("$bin/tools/smbdcat/smbdcat" "$bin/examples/file_transfer_server" "$bin/examples/file_transfer_client"
    "$bin/examples/smb2_negotiate" "$bin/examples/smb2_first_message")
else
  usage >&2
  exit 2
fi
# The guest's kernel peers' userland comes from the host: ksmbd.mountd and ksmbd.control
# (ksmbd-tools), mount.cifs (cifs-utils), tcpdump; tshark decodes the capture here.
tools/install-deps.sh tcpdump ksmbd-tools cifs-utils tshark

out=$(mktemp -d "${TMPDIR:-/tmp}/smbdirect-interop.XXXXXX")
trap 'rm -rf "$out"' EXIT
bins=()
for p in "${programs[@]}" /usr/bin/tcpdump /usr/sbin/ksmbd.mountd /usr/sbin/ksmbd.control /sbin/mount.cifs; do
  bins+=(--bin "$p")
done
# One VM per device: after a failed rdma mount, cifs.ko has been seen to keep its device busy
# ("task cifsd blocked"), and the device could then not be deleted to make way for the next.
status=0
for device in $devices; do
  tools/vm/run.sh --timeout "$timeout_s" --devices "$device" --output-dir "$out/guest" \
    --log "$out/console-$device.log" "${bins[@]}" --guest-script tests/interop/guest.sh || status=1
done
cat "$out"/console-*.log >"$out/console.log"
echo "=== interop results"
grep -a "^=== interop .*: \(ok\|FAILED.*\)$" "$out/console.log" || true
if grep -aq "blocked for more than" "$out/console.log"; then
  echo "note: the guest kernel reported blocked tasks:"
  grep -a "INFO: task .* blocked for more than" "$out/console.log" | sort -u -k3,3 | sed 's/^/  /'
fi
if [[ " $devices " == *" siw "* ]]; then
  echo "=== tshark: the siw capture"
  tests/interop/check_capture.sh "$out/guest/siw.pcap" || status=1
fi
if [ -n "$keep" ]; then
  mkdir -p "$keep"
  cp "$out/console.log" "$keep/"
  [ -f "$out/guest/siw.pcap" ] && cp "$out/guest/siw.pcap" "$keep/"
  echo "interop: kept the console log and the capture in $keep" >&2
fi
[ "$status" = 0 ] && echo "interop: passed" || echo "interop: FAILED"
exit $status

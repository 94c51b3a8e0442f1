#!/usr/bin/env bash
# Message size against throughput, ours and the baseline measured in the same run: builds
# smbdirect_bench (-c opt), runs one sweep with --baseline --format csv, and plots it with gnuplot.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tools/bench/plot.sh [--transport loopback|tcp] [--op send|write|read] [--sweep MIN:MAX]
                           [--iterations N] [--out DIR] [--name NAME] [-- BENCH-OPTION...]

Writes DIR/NAME.csv (smbdirect_bench --format csv) and DIR/NAME.svg:
size (bytes, log scale) against MB/s (10^6 bytes/s), ours and the baseline (loopback: memcpy,
tcp: a plain TCP socket), with their ratio on the right axis.

  --transport NAME  loopback or tcp (default loopback; verbs has no in-process baseline)
  --op NAME         send, write or read (default send)
  --sweep MIN:MAX   powers of two from MIN to MAX bytes (default 4096:4194304)
  --iterations N    per size (default: enough for 256 MiB per size, at least 64)
  --out DIR         where to write (default docs/performance)
  --name NAME       file names (default <transport>-<op>)
  -- ...            passed on to smbdirect_bench (e.g. --max-send-size 65536 --max-receive-size 65536)
Installs gnuplot-nox with apt if it is missing (needs root).
EOF
}

transport=loopback op=send sweep=4096:4194304 iterations="" out=docs/performance name=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --transport) transport="${2:?}"; shift 2 ;;
    --op) op="${2:?}"; shift 2 ;;
    --sweep) sweep="${2:?}"; shift 2 ;;
    --iterations) iterations="${2:?}"; shift 2 ;;
    --out) out="${2:?}"; shift 2 ;;
    --name) name="${2:?}"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; echo "plot: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$transport" in loopback|tcp) ;; *) echo "plot: --transport must be loopback or tcp" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
tools/install-deps.sh gnuplot-nox

bazel build -c opt --color=no --curses=no //tools/bench:smbdirect_bench 2>&1 | grep -v linux-sandbox | tail -n 1 >&2
bench="$(bazel info -c opt bazel-bin 2>/dev/null)/tools/bench/smbdirect_bench"
mkdir -p "$out"
name=${name:-$transport-$op}
csv="$out/$name.csv"

IFS=: read -r low high <<<"$sweep"
: >"$csv.tmp"
size=$low
while [ "$size" -le "$high" ]; do
  n=${iterations:-$(( 268435456 / size > 64 ? 268435456 / size : 64 ))}
  # One size per run, so each gets its own iteration count; the header comes from the first.
  "$bench" --transport "$transport" --op "$op" --size "$size" --iterations "$n" --baseline --format csv \
    "${extra[@]+"${extra[@]}"}" | { if [ "$size" = "$low" ]; then cat; else tail -n +2; fi; } >>"$csv.tmp"
  echo "plot: $size bytes done" >&2
  size=$((size * 2))
done
mv "$csv.tmp" "$csv"

baseline=$([ "$transport" = loopback ] && echo memcpy || echo "plain TCP socket")
gnuplot <<EOF
set terminal svg size 900,520 dynamic font "sans,12"
set output "$out/$name.svg"
set datafile separator ","
set key top left
set logscale x 2
set format x "%.0b%B"
set xlabel "message size (bytes)"
set ylabel "MB/s (10^6 bytes per second)"
set y2label "ratio to the baseline"
set y2range [0:*]
set y2tics
set ytics nomirror
set grid
set title "smbdirect $transport $op vs $baseline, same run ($(date -u +%Y-%m-%d), $(nproc) cores)"
plot "$csv" every ::1 using 4:9 with linespoints title "smbdirect $op", \
     "$csv" every ::1 using 4:13 with linespoints title "$baseline", \
     "$csv" every ::1 using 4:14 axes x1y2 with lines dashtype 2 title "ratio (right axis)"
EOF
echo "plot: wrote $csv and $out/$name.svg" >&2

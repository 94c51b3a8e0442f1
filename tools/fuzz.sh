#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz with clang 14 (-fsanitize=fuzzer,address,undefined)
# and runs each for a given time on a working corpus seeded from tests/fuzz/corpus/TARGET.
# A crash stops the run: the input is saved and its path printed; make it a regression test.
# Installs clang and its fuzzer runtime when missing (tools/install-deps.sh).
#
# usage: tools/fuzz.sh [--seconds N] [--out DIR] [TARGET ...]
#   --seconds N  run time per target (default 60)
#   --out DIR    binaries, working corpora, crashes and the execution log
#                (default /var/tmp/smbdirect-fuzz; the corpora there grow from run to run)
#   TARGET       wire, engine, tcp (default: all)
# Prints each target's executions and, from DIR/executions.tsv, the total over every run.
# Exit status: 0 no crash, 1 a crash or a build failure, 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60 out=/var/tmp/smbdirect-fuzz targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds takes a positive integer" >&2; exit 2; }
[ ${#targets[@]} -gt 0 ] || targets=(wire engine tcp)
for t in "${targets[@]}"; do
  [ -f "tests/fuzz/${t}_fuzzer.cpp" ] || { echo "fuzz.sh: no target '$t' (wire, engine, tcp)" >&2; exit 2; }
done

tools/install-deps.sh clang-14 libclang-rt-14-dev

# Asio 1.22 only enables coroutines for clang through the Coroutines TS macro; clang 14 has the
# C++20 ones. UBSan's function check breaks clang 14's coroutine codegen ("Cannot represent a
# difference across sections"), so it is the one check left out.
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize=function
       -fno-sanitize-recover=undefined -DASIO_STANDALONE -DASIO_HAS_CO_AWAIT -DASIO_HAS_STD_COROUTINE
       -Iinclude -Itransports/loopback/include -Itransports/tcp/include -Itests)
mkdir -p "$out/bin"
status=0
for t in "${targets[@]}"; do
  bin=$out/bin/${t}_fuzzer
  if [ ! -x "$bin" ] || [ -n "$(find include transports tests/fuzz tests/support -newer "$bin" -name '*.?pp' -print -quit)" ]; then
    echo "=== building $t"
    clang++-14 "${flags[@]}" "tests/fuzz/${t}_fuzzer.cpp" -o "$bin" -lisal || { status=1; continue; }
  fi
  corpus=$out/corpus/$t
  mkdir -p "$corpus" "$out/crashes"
  cp -n "tests/fuzz/corpus/$t/"* "$corpus/" 2>/dev/null || true
  echo "=== fuzzing $t for ${seconds} s (corpus $corpus)"
  log=$out/$t.log
  set +e
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$out/crashes/$t-" \
    -print_pcs=0 -close_fd_mask=1 "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
  if [ $rc -ne 0 ] || [ -z "$runs" ]; then
    echo "FAIL: $t (exit $rc); the input and the report:" >&2
    grep -E '^(artifact_prefix|Test unit written|==[0-9]+==ERROR|SUMMARY)' "$log" >&2 || tail -30 "$log" >&2
    status=1
    continue
  fi
  printf '%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$runs" >>"$out/executions.tsv"
  total=$(awk -F'\t' -v t="$t" '$2 == t { s += $3 } END { print s + 0 }' "$out/executions.tsv")
  echo "$t: $runs executions in ${seconds} s, no crash; $total in all runs logged in $out/executions.tsv"
done
exit $status

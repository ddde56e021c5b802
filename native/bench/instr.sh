#!/usr/bin/env bash
# Instructions per packet of the packet path, per figure of path_bench, counted by callgrind:
# the same count for the same binary and input whatever else the machine does, so a change's
# effect shows on a shared machine too (cycles do not; docs/bench.md).
#   native/bench/instr.sh [figure,...] [flows] [batches]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash native/bench/build.sh >/dev/null
figs=${1:-tcp,tcp-reply,udp,icmp-local,icmp-fnat,new-conns}
flows=${2:-1024}
batches=${3:-2000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in ${figs//,/ }; do
  valgrind --tool=callgrind --callgrind-out-file="$tmp/$f.out" --toggle-collect='round_timed*' \
    build/bench/path_bench "$f" "$flows" -b "$batches" >"$tmp/$f.json" 2>"$tmp/$f.err" ||
    { cat "$tmp/$f.err" >&2; exit 1; }
  ir=$(grep -m1 '^summary:' "$tmp/$f.out" | awk '{print $2}')
  # new-conns runs one pass of its own size, not `batches`.
  pkts=$((batches * 32))
  [[ $f == new-conns ]] && pkts=262144
  awk -v f="$f" -v ir="$ir" -v p="$pkts" 'BEGIN { printf "%-11s %8.1f instructions/packet\n", f, ir / p }'
done

#!/usr/bin/env bash
# Builds the native benchmarks (optimised like the addon, no sanitizers) into build/bench/:
# synproxy_bench and path_bench. Skips a binary newer than every source.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/bench
mkdir -p "$out"
# gcc, as node-gyp builds the addon: the same code generation as what the pcap cases measure.
cc=gcc
for b in synproxy_bench path_bench; do
  srcs=(native/dp_*.c native/bench/harness.c "native/bench/$b.c")
  newest=$(ls -t "${srcs[@]}" native/*.h native/bench/*.h native/bench/build.sh | head -1)
  if [[ -x $out/$b && $out/$b -nt $newest ]]; then continue; fi
  # shellcheck disable=SC2046
  "$cc" -O3 -flto=auto -g -D_GNU_SOURCE -DALLOW_EXPERIMENTAL_API -std=gnu11 -Wall -Wextra -Wno-unused-parameter \
    $(pkg-config --cflags libdpdk) -Inative -Inative/bench "${srcs[@]}" -o "$out/$b.tmp" \
    $(pkg-config --libs libdpdk) -lpthread
  mv "$out/$b.tmp" "$out/$b"
  echo "built $out/$b"
done

#!/usr/bin/env bash
# Builds the SYN proxy's packet-path benchmark (optimised like the addon, no sanitizers) into
# build/bench/synproxy_bench. Skips the build when the binary is newer than every source.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/bench
mkdir -p "$out"
srcs=(native/dp_*.c native/bench/synproxy_bench.c)
newest=$(ls -t "${srcs[@]}" native/*.h native/bench/build.sh | head -1)
if [[ -x $out/synproxy_bench && $out/synproxy_bench -nt $newest ]]; then exit 0; fi
cc=$(command -v clang-14 || command -v clang || command -v gcc)
# shellcheck disable=SC2046
"$cc" -O3 -flto -g -D_GNU_SOURCE -DALLOW_EXPERIMENTAL_API -std=gnu11 -Wall -Wextra -Wno-unused-parameter \
  -Wno-unused-command-line-argument \
  $(pkg-config --cflags libdpdk) -Inative "${srcs[@]}" -o "$out/synproxy_bench.tmp" $(pkg-config --libs libdpdk) -lpthread
mv "$out/synproxy_bench.tmp" "$out/synproxy_bench"
echo "built $out/synproxy_bench"

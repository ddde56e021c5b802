#!/usr/bin/env bash
# Builds the libFuzzer harness (clang, ASan + UBSan) into build/fuzz/fuzz_packet.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/fuzz
mkdir -p "$out"
srcs=(native/dp_*.c native/fuzz/fuzz_packet.c)
newest=$(ls -t "${srcs[@]}" native/*.h | head -1)
if [[ -x $out/fuzz_packet && $out/fuzz_packet -nt $newest && $out/fuzz_packet -nt native/fuzz/build.sh ]]; then exit 0; fi
cc=$(command -v clang-14 || command -v clang)
# shellcheck disable=SC2046
"$cc" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -D_GNU_SOURCE -DALLOW_EXPERIMENTAL_API -std=gnu11 -Wno-unused-command-line-argument \
  $(pkg-config --cflags libdpdk) -Inative "${srcs[@]}" -o "$out/fuzz_packet" $(pkg-config --libs libdpdk) -lpthread
echo "built $out/fuzz_packet"

#!/usr/bin/env bash
# Fuzz the packet path with libFuzzer under ASan/UBSan.
#   scripts/fuzz.sh                 short run (CI): 20000 inputs
#   scripts/fuzz.sh -runs=10000000  long run; any libFuzzer flag is passed through
# Crashes are written to build/fuzz/artifacts/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash native/fuzz/build.sh >/dev/null
python3 native/fuzz/make_corpus.py build/fuzz/seeds
mkdir -p build/fuzz/corpus build/fuzz/artifacts
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(-runs=20000)
# LSan cannot run under the ptrace-less sandbox of some CI hosts and DPDK keeps its memory until
# exit anyway: leaks of mbufs are checked by the harness itself.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec build/fuzz/fuzz_packet -artifact_prefix=build/fuzz/artifacts/ -max_len=4096 -print_final_stats=1 \
  "${args[@]}" build/fuzz/corpus build/fuzz/seeds

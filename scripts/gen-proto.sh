#!/usr/bin/env bash
# Generates TypeScript types and grpc-js service definitions from proto/ with
# ts-proto. The only way src/gen/ is written; never edit its files by hand.
#   scripts/gen-proto.sh           regenerate src/gen/
#   scripts/gen-proto.sh --check   fail if src/gen/ differs from what proto/ generates
set -euo pipefail
cd "$(dirname "$0")/.."

out=src/gen
mode=${1:-write}
if [[ $mode == --check ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi

plugin=node_modules/.bin/protoc-gen-ts_proto
[[ -x $plugin ]] || { echo "gen-proto: $plugin missing (run npm ci)" >&2; exit 1; }
command -v protoc >/dev/null || { echo "gen-proto: protoc missing (apt-get install protobuf-compiler)" >&2; exit 1; }

# Options shared with the proto-loader options in src/server/protos.ts:
# 64-bit integers are bigint (proto-loader: longs=String), so counters stay exact.
opts=outputServices=grpc-js,forceLong=bigint,esModuleInterop=true,env=node,useDate=true,useExactTypes=false,outputClientImpl=false

[[ $mode == --check ]] || { rm -rf "$out"; mkdir -p "$out"; }
mapfile -t files < <(cd proto && find retrace -name '*.proto' | LC_ALL=C sort)
protoc --plugin=protoc-gen-ts_proto="$plugin" \
  --ts_proto_out="$out" --ts_proto_opt="$opts" \
  -I proto -I /usr/include "${files[@]}"

if [[ $mode == --check ]]; then
  if ! diff -ru src/gen "$out" >/dev/null; then
    diff -ru src/gen "$out" | head -40 >&2
    echo "gen-proto: src/gen is stale; run 'npm run gen' and commit the result" >&2
    exit 1
  fi
  echo "gen-proto: src/gen is up to date"
fi

#!/usr/bin/env bash
# Soak test: TCP, UDP and ICMP conn churn through the namespace lab for SOAK_SECONDS (default 600),
# sampling the mbuf pool's in-use count, the appliance's RSS and the conn count every
# SOAK_SAMPLE_SECONDS (default 10). Passes when the conns expire afterwards, the mbuf in-use count
# is back at its baseline and the RSS is flat (growth of its troughs <= SOAK_RSS_SLOPE_MAX
# KiB/min, default 1024). Writes bench/results/soak-<date>.json and .md (SOAK_OUT to change).
#   scripts/soak.sh                    10 minutes
#   SOAK_SECONDS=120 scripts/soak.sh   a quick check
# Needs root (network namespaces) and a built tree (npm run build); rebuilds the TypeScript when
# src/ is newer than dist/lab/soak.js.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "soak: needs root (network namespaces)" >&2; exit 2; }
[[ -f build/Release/retrace.node ]] || { echo "soak: native addon missing (npm run build)" >&2; exit 2; }
if [[ ! -f dist/lab/soak.js ]] || [[ -n $(find src -name '*.ts' -newer dist/lab/soak.js -print -quit) ]]; then
  npx tsc -p tsconfig.json
fi
exec node dist/lab/soak.js "$@"

#!/usr/bin/env bash
# Lint and format, configured once each: eslint (eslint.config.mjs: eslint + typescript-eslint,
# type-aware), prettier (.prettierrc.json) for TypeScript and JavaScript, clang-format
# (native/.clang-format for the C dataplane, native/binding/.clang-format for the C++ binding), and
# tsc over the tests (test/tsconfig.json).
#   scripts/lint.sh         check; exits 1 naming what is off (npm test runs this)
#   scripts/lint.sh --fix   rewrite what the tools can fix
set -euo pipefail
cd "$(dirname "$0")/.."

fix=false
[[ ${1:-} == --fix ]] && fix=true
clang_format=$(command -v clang-format-14 || command -v clang-format || true)
[[ -n $clang_format ]] || { echo "lint: clang-format missing (apt-get install clang-format-14; deploy/bootstrap.sh does)" >&2; exit 1; }

mapfile -t c_files < <(git ls-files --cached --others --exclude-standard 'native/*.c' 'native/*.h' 'native/*.cc')
fail=0
if $fix; then
  node_modules/.bin/eslint --fix .
  node_modules/.bin/prettier --log-level warn --write .
  "$clang_format" -i "${c_files[@]}"
  exit 0
fi
node_modules/.bin/eslint . || fail=1
# Type-check the tests as ts-jest will, all at once: a test that no longer compiles is named here
# in seconds instead of as a suite that "failed to run" minutes into the run.
node_modules/.bin/tsc --noEmit -p test/tsconfig.json || { echo "lint: tsc: the tests do not type-check" >&2; fail=1; }
node_modules/.bin/prettier --log-level warn --check . || { echo "lint: prettier: run npm run format" >&2; fail=1; }
"$clang_format" --dry-run --Werror "${c_files[@]}" 2>&1 | head -20 | grep . && { echo "lint: clang-format: run npm run format" >&2; fail=1; }
exit $fail

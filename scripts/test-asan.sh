#!/usr/bin/env bash
# npm run test:asan — the native-heavy tests against an AddressSanitizer + UndefinedBehaviorSanitizer
# build of the addon (build-asan/, beside the normal build/, which stays untouched). node itself is
# not instrumented, so the ASan runtime is preloaded; leak detection is off (V8 keeps memory until
# exit by design). Any ASan or UBSan report aborts the test process, so the run fails on the first.
#   HIERMEM_ASAN_TESTS="kernels model"   run other test files (names under test/, without .test.ts)
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$SECONDS
mkdir -p build-asan
npx cmake-js build --out build-asan --CDHIERMEM_SANITIZE=ON >build-asan/build.log 2>&1 || { tail -n 40 build-asan/build.log; exit 1; }
addon="$PWD/build-asan/Release/hiermem.node"
npx tsc -p tsconfig.json
t1=$SECONDS

asan_lib=$(gcc -print-file-name=libasan.so)
[ -f "$asan_lib" ] || { echo "test:asan: libasan.so not found (gcc -print-file-name=libasan.so gave $asan_lib)"; exit 1; }
files=()
for t in ${HIERMEM_ASAN_TESTS:-kernels memory-kernels model memory-model native-boundary fuzz-loaders}; do files+=("dist/test/$t.test.js"); done

export HIERMEM_ADDON_PATH="$addon" LD_PRELOAD="$asan_lib"
export HIERMEM_FUZZ_RUNS="${HIERMEM_FUZZ_RUNS:-150}"  # the loader fuzz, shorter than the plain run
# allocator_may_return_null: a bank too large for the machine must fail as in production (calloc returns NULL → E_IO)
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# the sanitized addon really is the one loaded
node -e "import('./dist/lib/native.js').then((m) => { m.loadNative(); const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');
  if (!maps.includes(process.env.HIERMEM_ADDON_PATH) || !maps.includes('libasan')) { console.error('test:asan: the ASan addon is not loaded'); process.exit(1); } })"
log=build-asan/test.log
set +e
node --test --test-concurrency=1 "${files[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" "$log"; then
  echo "test:asan: sanitizer reports (see $log)"
  exit 1
fi
echo "test:asan: build $((t1 - t0)) s, tests $((SECONDS - t1)) s, status $status, 0 sanitizer reports"
exit "$status"

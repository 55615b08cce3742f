#!/usr/bin/env bash
# Compile-only check of the portable path for aarch64 (Grace Hopper nodes are aarch64 Linux GPUs):
# every CPU source and the binding built with Debian's cross compiler, where the x86 SIMD levels
# drop out (HM_X86 = 0) and the portable GEMM micro-kernel is the only one. Nothing runs: a NEON
# micro-kernel and an aarch64 test run are later steps. Needs g++-aarch64-linux-gnu and node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
command -v "$CXX" >/dev/null || { echo "cross-compile-check: $CXX not found (apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }
napi_inc=$(node -p "require('node-api-headers').include_dir")
addon_inc=$(node -p "require('node-addon-api').include_dir" | tr -d '"')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=gnu++17 -O2 -fPIC -Wall -Wextra -Wno-unused-parameter -Werror -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -Icpp)
n=0
for f in cpp/*.cc cpp/kernels/*.cc cpp/memory/*.cc; do
  "$CXX" "${flags[@]}" -c "$f" -o "$out/$(basename "$f").o"; n=$((n + 1))
done
for f in binding/*.cc; do
  "$CXX" "${flags[@]}" -I"$napi_inc" -I"$addon_inc" -c "$f" -o "$out/binding-$(basename "$f").o"; n=$((n + 1))
done
"$CXX" -shared -o "$out/hiermem.node" "$out"/*.o -static-libstdc++ -static-libgcc -lpthread
readelf -h "$out/hiermem.node" | grep -q AArch64 || { echo "cross-compile-check: the linked addon is not aarch64" >&2; exit 1; }
echo "cross-compile-check: $n sources compiled and linked for aarch64 with $($CXX -dumpversion)"

#!/usr/bin/env bash
# prebuildify calls this in place of node-gyp (it has no cmake-js backend); node-gyp's arguments
# are ignored and cmake-js builds build/Release/hiermem.node, which prebuildify then copies.
# Where nvcc exists the build also writes build/Release/hiermem_cuda.so; prebuildify copies every
# *.so of build/Release beside the prebuild (its copySharedLibs, stripped with --strip), as
# prebuilds/linux-x64/hiermem_cuda.so, where lib/backend.ts looks for it (beside the addon).
# prebuilds/ is for local use: releases ship the platform packages (npm run pack:all).
set -e
cd "$(dirname "$0")/.."
exec npx cmake-js rebuild

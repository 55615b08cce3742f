#!/usr/bin/env bash
# prebuildify calls this in place of node-gyp (it has no cmake-js backend); node-gyp's arguments
# are ignored and cmake-js builds build/Release/hiermem.node, which prebuildify then copies.
set -e
cd "$(dirname "$0")/.."
exec npx cmake-js rebuild

#!/usr/bin/env node
// hiermem's npm install script: build the native addon from source only when no prebuild loads.
//
//  1. HIERMEM_BUILD_FROM_SOURCE=1: always build (cmake-js rebuild).
//  2. The platform package (@hiermem/<platform>-<arch>, an optional dependency) is installed and
//     its hiermem.node loads in a child node: done.
//  3. node-gyp-build finds a loadable build/Release or prebuilds/ addon (node-gyp-build-test): done.
//  4. Otherwise: cmake-js rebuild (needs cmake and g++), exit code passed on.
//
// CommonJS with no dependency beyond node and node-gyp-build, since it runs before anything else
// of the package can be trusted to work. Loads happen in child processes so that a crashing
// prebuild cannot take the install down with it.
'use strict';

const { spawnSync } = require('node:child_process');
const { createRequire } = require('node:module');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const platformPackage = `@hiermem/${process.platform}-${process.arch}`;

function log(msg) {
  process.stderr.write(`hiermem: ${msg}\n`);
}

/** Runs `node <args>` quietly in the package root; true when it exits 0. */
function nodeSucceeds(args) {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // no loaders or inspectors in the check
  const r = spawnSync(process.execPath, args, { cwd: root, env, stdio: 'ignore', timeout: 60_000 });
  return !r.error && r.status === 0;
}

/** The platform package's addon, or null when the package is not installed. */
function platformAddon() {
  try {
    const fromRoot = createRequire(path.join(root, 'package.json'));
    return path.join(path.dirname(fromRoot.resolve(`${platformPackage}/package.json`)), 'hiermem.node');
  } catch {
    return null;
  }
}

function prebuildLoads() {
  const addon = platformAddon();
  if (addon !== null) {
    if (nodeSucceeds(['-e', 'require(process.argv[1])', addon])) {
      log(`using the prebuild in ${platformPackage}`);
      return true;
    }
    log(`${addon} does not load here; trying a local build`);
  }
  let test;
  try {
    test = require.resolve('node-gyp-build/build-test.js', { paths: [root] });
  } catch {
    return false; // node-gyp-build missing: only a source build can help
  }
  if (nodeSucceeds([test])) {
    log('using the existing build (build/Release or prebuilds/)');
    return true;
  }
  return false;
}

function buildFromSource() {
  let bin;
  try {
    const pkgJson = require.resolve('cmake-js/package.json', { paths: [root] });
    const binField = require(pkgJson).bin;
    const rel = typeof binField === 'string' ? binField : binField['cmake-js'];
    bin = path.join(path.dirname(pkgJson), rel);
  } catch (e) {
    log(`cannot build from source: cmake-js is not installed (${e.message})`);
    return 1;
  }
  log('building the native addon from source (cmake-js rebuild; needs cmake and g++)');
  const r = spawnSync(process.execPath, [bin, 'rebuild'], { cwd: root, stdio: 'inherit' });
  if (r.error) {
    log(`cannot run cmake-js: ${r.error.message}`);
    return 1;
  }
  if (r.signal) {
    log(`cmake-js was killed by ${r.signal}`);
    return 1;
  }
  return r.status ?? 1;
}

function main() {
  if (process.env.HIERMEM_BUILD_FROM_SOURCE === '1') {
    log('HIERMEM_BUILD_FROM_SOURCE=1: building from source');
    return buildFromSource();
  }
  return prebuildLoads() ? 0 : buildFromSource();
}

process.exitCode = main();

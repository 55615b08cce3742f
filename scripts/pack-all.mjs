#!/usr/bin/env node
// `npm run pack:all [-- --out DIR] [-- --skip-prepare]`: the tarballs of a release, from the existing build.
//
//  - hiermem-<v>.tgz: the main package (`npm pack`: JS in dist/, sources for a source build).
//  - hiermem-linux-x64-<v>.tgz: npm/linux-x64/ plus build/Release/hiermem.node, stripped.
//  - hiermem-linux-x64-cuda-<v>.tgz: npm/linux-x64-cuda/ plus build/Release/hiermem_cuda.so,
//    stripped; skipped (and said so) where the build has no CUDA library (no nvcc).
//
// It never builds the addon: a release packs what was built and tested. --skip-prepare packs the
// main package without its `prepare` script (tsc), for callers that have just compiled dist/.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const platform = `${process.platform}-${process.arch}`;

function fail(msg) {
  process.stderr.write(`pack:all: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const opts = { out: path.join(root, 'dist-packages'), skipPrepare: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') {
      if (argv[i + 1] === undefined) fail('--out needs a folder');
      opts.out = path.resolve(argv[++i]);
    } else if (a.startsWith('--out=')) opts.out = path.resolve(a.slice('--out='.length));
    else if (a === '--skip-prepare') opts.skipPrepare = true;
    else fail(`unknown argument "${a}" (have: --out DIR, --skip-prepare)`);
  }
  return opts;
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    return fail(`cannot read ${path.relative(root, file)}: ${e.message}`);
  }
}

/** Runs a command; fails the script with its output when it does not exit 0. */
function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) fail(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} (in ${cwd}) exited with ${r.status ?? r.signal}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** `npm pack` of dir into out; the tarball's absolute path. */
function npmPack(dir, out, extra = []) {
  const stdout = run('npm', ['pack', '--json', '--pack-destination', out, ...extra], dir);
  let info;
  try {
    // npm prints the prepare script's output before the JSON when scripts run: take the JSON part
    info = JSON.parse(stdout.slice(Math.max(0, stdout.search(/^\[/m))));
  } catch {
    fail(`npm pack in ${dir} printed no JSON:\n${stdout}`);
  }
  return path.join(out, info[0].filename);
}

/** A platform package staged from its template plus one stripped binary, packed into out. */
function packPlatform(templateDir, binary, out, version) {
  const pkg = readJson(path.join(templateDir, 'package.json'));
  if (pkg.version !== version) {
    fail(`${path.relative(root, templateDir)}/package.json has version ${pkg.version}, the main package ${version}: make them equal`);
  }
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-stage-'));
  try {
    for (const f of ['package.json', 'README.md']) fs.copyFileSync(path.join(templateDir, f), path.join(stage, f));
    const copy = path.join(stage, path.basename(binary));
    fs.copyFileSync(binary, copy);
    run('strip', ['--strip-unneeded', copy], stage); // a copy: the build folder stays as built
    const tarball = npmPack(stage, out, ['--ignore-scripts']);
    return { name: pkg.name, tarball };
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (platform !== 'linux-x64') fail(`platform packages exist for linux-x64 only, this is ${platform}`);
  const release = path.join(root, 'build', 'Release');
  const addon = path.join(release, 'hiermem.node');
  if (!fs.existsSync(addon)) {
    fail(`no ${path.relative(root, addon)}: build the addon first ("npm run build:native"); pack:all packs an existing build and never builds`);
  }
  const main = readJson(path.join(root, 'package.json'));
  for (const [name, spec] of Object.entries(main.optionalDependencies ?? {})) {
    if (name.startsWith('@hiermem/') && spec !== main.version) {
      fail(`package.json: optionalDependencies["${name}"] is "${spec}", must be exactly the package version ${main.version}`);
    }
  }

  fs.mkdirSync(opts.out, { recursive: true });
  // no stale tarball (e.g. a CUDA one from an earlier build) may sit beside this release's
  for (const f of fs.readdirSync(opts.out)) {
    if (/^hiermem-.*\.tgz$/.test(f)) fs.rmSync(path.join(opts.out, f));
  }

  const made = [];
  made.push(packPlatform(path.join(root, 'npm', 'linux-x64'), addon, opts.out, main.version));
  const cudaLib = path.join(release, 'hiermem_cuda.so');
  if (fs.existsSync(cudaLib)) {
    made.push(packPlatform(path.join(root, 'npm', 'linux-x64-cuda'), cudaLib, opts.out, main.version));
  } else {
    process.stderr.write(`pack:all: skipping @hiermem/linux-x64-cuda: no ${path.relative(root, cudaLib)} (built without nvcc)\n`);
  }
  const mainTarball = npmPack(root, opts.out, opts.skipPrepare ? ['--ignore-scripts'] : []);
  made.unshift({ name: main.name, tarball: mainTarball });

  for (const m of made) {
    const size = (fs.statSync(m.tarball).size / 1024).toFixed(0);
    process.stderr.write(`pack:all: ${m.name}: ${m.tarball} (${size} KiB)\n`);
  }
  // one JSON line on stdout for scripts and tests
  process.stdout.write(JSON.stringify({ out: opts.out, tarballs: Object.fromEntries(made.map((m) => [m.name, m.tarball])) }) + '\n');
}

main();

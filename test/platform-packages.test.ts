/**
 * Prebuilds ship as platform packages (@hiermem/linux-x64, @hiermem/linux-x64-cuda), as sharp and
 * node-llama-cpp do theirs: the main package is JS plus sources, and lists them as optional
 * dependencies at its own exact version.
 *
 * The end-to-end test packs everything from the existing build (scripts/pack-all.mjs), installs the
 * main and linux-x64 tarballs into a scratch project from those local files, offline, and checks
 * that nothing compiles there, that `hiermem info` reports the addon from the platform package and
 * that a short `hiermem train` runs. It needs build/Release/hiermem.node and skips without it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../lib/native.js';

const root = packageRoot();
const builtAddon = path.join(root, 'build', 'Release', 'hiermem.node');

interface PackageJson {
  name: string;
  version: string;
  os?: string[];
  cpu?: string[];
  files?: string[];
  scripts?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const readJson = (file: string): PackageJson => JSON.parse(fs.readFileSync(file, 'utf8')) as PackageJson;

const PLATFORM_PACKAGES: { dir: string; name: string; binary: string }[] = [
  { dir: 'npm/linux-x64', name: '@hiermem/linux-x64', binary: 'hiermem.node' },
  { dir: 'npm/linux-x64-cuda', name: '@hiermem/linux-x64-cuda', binary: 'hiermem_cuda.so' },
];

test('platform package templates agree with the main package (version, os/cpu, files, licence)', () => {
  const main = readJson(path.join(root, 'package.json'));
  assert.ok(!(main.files ?? []).includes('prebuilds'), 'the main package must not ship prebuilds/');
  assert.ok((main.files ?? []).includes('scripts/install.cjs'), 'the install script must ship');
  assert.equal(main.scripts?.install, 'node scripts/install.cjs');
  for (const p of PLATFORM_PACKAGES) {
    const pkg = readJson(path.join(root, p.dir, 'package.json'));
    assert.equal(pkg.name, p.name);
    assert.equal(pkg.version, main.version, `${p.dir}: version must equal the main package's`);
    assert.equal(main.optionalDependencies?.[p.name], main.version, `optionalDependencies["${p.name}"] must be exactly ${main.version}`);
    assert.deepEqual(pkg.os, ['linux']);
    assert.deepEqual(pkg.cpu, ['x64']);
    assert.ok(pkg.files?.includes(p.binary), `${p.dir}: files must list ${p.binary}`);
    assert.match(fs.readFileSync(path.join(root, p.dir, 'README.md'), 'utf8'), /Licen[cs]e: MIT/);
    if (fs.existsSync(path.join(root, '.git'))) {
      assert.ok(isGitIgnored(path.join(p.dir, p.binary)), `${p.dir}/${p.binary} must be git-ignored: binaries are never committed`);
    }
  }
});

function isGitIgnored(rel: string): boolean {
  const r = spawnSync('git', ['check-ignore', '-q', rel], { cwd: root });
  return r.status === 0;
}

/** The environment of a child npm/node: no settings inherited from an outer `npm test` or ASan run. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'INIT_CWD' || k === 'NODE_OPTIONS' || k === 'LD_PRELOAD' || k.startsWith('HIERMEM_')) continue;
    env[k] = v;
  }
  return env;
}

function run(cmd: string, args: string[], cwd: string, timeoutMs: number): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env: cleanEnv(), encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
}

function describeRun(what: string, r: SpawnSyncReturns<string>): string {
  return `${what}: exit ${r.status} (signal ${r.signal}${r.error ? `, ${r.error.message}` : ''})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

function tarList(tarball: string): string[] {
  const r = spawnSync('tar', ['-tzf', tarball], { encoding: 'utf8' });
  assert.equal(r.status, 0, describeRun(`tar -tzf ${tarball}`, r));
  return r.stdout.split('\n').filter((l) => l !== '');
}

// ---- the loader's and the install script's choices, in a fake package tree ---------------------

/**
 * A throwaway copy of the package (dist/lib, scripts/install.cjs, node-gyp-build) with, as asked:
 * a local build, a platform package whose addon loads or is garbage, a CUDA platform package, and
 * a stand-in cmake-js that records that it ran and exits 3.
 */
function fakeTree(t: { after(fn: () => void): void }, o: { local?: boolean; platform?: 'good' | 'garbage'; cudaPackage?: boolean }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-loader-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.cpSync(path.join(root, 'dist', 'lib'), path.join(dir, 'dist', 'lib'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'scripts'));
  fs.copyFileSync(path.join(root, 'scripts', 'install.cjs'), path.join(dir, 'scripts', 'install.cjs'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'hiermem', version: '0.0.0', type: 'module' }));
  const nm = path.join(dir, 'node_modules');
  fs.mkdirSync(nm);
  fs.cpSync(path.dirname(resolveFromHere('node-gyp-build/package.json')), path.join(nm, 'node-gyp-build'), { recursive: true });
  fs.mkdirSync(path.join(nm, 'cmake-js', 'bin'), { recursive: true });
  fs.writeFileSync(path.join(nm, 'cmake-js', 'package.json'), JSON.stringify({ name: 'cmake-js', version: '0.0.0', bin: { 'cmake-js': './bin/cmake-js' } }));
  fs.writeFileSync(path.join(nm, 'cmake-js', 'bin', 'cmake-js'),
    `require('fs').writeFileSync(${JSON.stringify(path.join(dir, 'cmake-js-ran'))}, process.argv.slice(2).join(' ')); process.exit(3);\n`);
  if (o.local) {
    fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
    fs.copyFileSync(builtAddon, path.join(dir, 'build', 'Release', 'hiermem.node'));
  }
  if (o.platform) {
    const pkg = path.join(nm, '@hiermem', 'linux-x64');
    fs.mkdirSync(pkg, { recursive: true });
    fs.copyFileSync(path.join(root, 'npm', 'linux-x64', 'package.json'), path.join(pkg, 'package.json'));
    if (o.platform === 'good') fs.copyFileSync(builtAddon, path.join(pkg, 'hiermem.node'));
    else fs.writeFileSync(path.join(pkg, 'hiermem.node'), 'not an ELF file');
  }
  if (o.cudaPackage) {
    const pkg = path.join(nm, '@hiermem', 'linux-x64-cuda');
    fs.mkdirSync(pkg, { recursive: true });
    fs.copyFileSync(path.join(root, 'npm', 'linux-x64-cuda', 'package.json'), path.join(pkg, 'package.json'));
    fs.writeFileSync(path.join(pkg, 'hiermem_cuda.so'), ''); // only its path matters here
  }
  return dir;
}

const resolveFromHere = (id: string): string => createRequire(import.meta.url).resolve(id);

/** What the copied loader picks: {path, source, cuda} or {code, message}. */
function loaderReport(dir: string): { path?: string; source?: string; cuda?: string | null; code?: string; message?: string } {
  const script = `
    const native = await import(${JSON.stringify(path.join(dir, 'dist', 'lib', 'native.js'))});
    try {
      const p = native.nativeAddonPath();
      const backend = await import(${JSON.stringify(path.join(dir, 'dist', 'lib', 'backend.js'))});
      console.log(JSON.stringify({ path: p, source: native.nativeAddonSource(), cuda: backend.cudaLibraryPath() }));
    } catch (e) {
      console.log(JSON.stringify({ code: e.code, message: e.message }));
    }`;
  const r = run(process.execPath, ['--input-type=module', '-e', script], dir, 30_000);
  assert.equal(r.status, 0, describeRun('loader child', r));
  return JSON.parse(r.stdout.trim()) as ReturnType<typeof loaderReport>;
}

const skipNoBuild = (): string | false => (fs.existsSync(builtAddon) ? false : `no ${path.relative(root, builtAddon)}: build the addon first (npm run build:native)`);

test('loader: a local build first, then the platform package; a broken one falls through; the error lists every path tried', { skip: skipNoBuild() }, (t) => {
  const pkg = fakeTree(t, { platform: 'good', cudaPackage: true });
  const a = loaderReport(pkg);
  assert.equal(a.source, 'platform-package');
  assert.equal(a.path, path.join(pkg, 'node_modules', '@hiermem', 'linux-x64', 'hiermem.node'));
  assert.equal(a.cuda, path.join(pkg, 'node_modules', '@hiermem', 'linux-x64-cuda', 'hiermem_cuda.so'), 'the CUDA package is used when no library sits beside the addon');

  // a source build is never shadowed by a published prebuild
  const both = fakeTree(t, { local: true, platform: 'good' });
  const l = loaderReport(both);
  assert.equal(l.source, 'local-build');
  assert.equal(l.path, path.join(both, 'build', 'Release', 'hiermem.node'));

  const broken = fakeTree(t, { local: true, platform: 'garbage' });
  const b = loaderReport(broken);
  assert.equal(b.source, 'local-build');
  assert.equal(b.path, path.join(broken, 'build', 'Release', 'hiermem.node'));

  const nothing = fakeTree(t, { platform: 'garbage' });
  const c = loaderReport(nothing);
  assert.equal(c.code, 'E_NATIVE_UNAVAILABLE');
  for (const where of [path.join(nothing, 'node_modules', '@hiermem', 'linux-x64', 'hiermem.node'), path.join(nothing, 'build', 'Release', 'hiermem.node'),
    path.join(nothing, 'prebuilds', 'linux-x64')]) {
    assert.ok(c.message?.includes(where), `the error does not name ${where}:\n${c.message}`);
  }
  assert.match(c.message ?? '', /cmake and g\+\+/);
  assert.doesNotMatch(c.message ?? '', /openblas/i);

  const none = loaderReport(fakeTree(t, {}));
  assert.equal(none.code, 'E_NATIVE_UNAVAILABLE');
  assert.match(none.message ?? '', /@hiermem\/linux-x64: not installed/);
});

test('install script: no build where a prebuild loads; cmake-js rebuild otherwise, or when HIERMEM_BUILD_FROM_SOURCE=1', { skip: skipNoBuild() }, (t) => {
  const install = (dir: string, env: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(process.execPath, [path.join(dir, 'scripts', 'install.cjs')], { cwd: dir, env: { ...cleanEnv(), ...env }, encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stderr: r.stderr, built: fs.existsSync(path.join(dir, 'cmake-js-ran')) ? fs.readFileSync(path.join(dir, 'cmake-js-ran'), 'utf8') : null };
  };
  const good = install(fakeTree(t, { platform: 'good' }));
  assert.deepEqual([good.status, good.built], [0, null], good.stderr);
  assert.match(good.stderr, /using the prebuild in @hiermem\/linux-x64/);

  const local = install(fakeTree(t, { local: true, platform: 'garbage' }));
  assert.deepEqual([local.status, local.built], [0, null], local.stderr);
  assert.match(local.stderr, /does not load here/);

  const none = install(fakeTree(t, { platform: 'garbage' }));
  assert.deepEqual([none.status, none.built], [3, 'rebuild'], `the build's exit code must pass through:\n${none.stderr}`);

  const forced = install(fakeTree(t, { local: true, platform: 'good' }), { HIERMEM_BUILD_FROM_SOURCE: '1' });
  assert.deepEqual([forced.status, forced.built], [3, 'rebuild'], forced.stderr);
});

test('pack:all, then an offline install of the tarballs loads the prebuild from @hiermem/linux-x64 without compiling', { timeout: 240_000 }, (t) => {
  if (!fs.existsSync(builtAddon)) {
    t.skip(`no ${path.relative(root, builtAddon)}: build the addon first (npm run build:native)`);
    return;
  }
  if (`${process.platform}-${process.arch}` !== 'linux-x64') {
    t.skip('platform packages exist for linux-x64 only');
    return;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-platform-'));
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));

  // 1. pack (dist/ was just compiled by `npm test`'s pretest: no second tsc)
  const out = path.join(work, 'packages');
  const packed = run(process.execPath, [path.join(root, 'scripts', 'pack-all.mjs'), '--out', out, '--skip-prepare'], root, 120_000);
  assert.equal(packed.status, 0, describeRun('pack-all', packed));
  const lastLine = packed.stdout.trim().split('\n').pop() ?? '';
  const { tarballs } = JSON.parse(lastLine) as { tarballs: Record<string, string> };
  const mainTgz = tarballs.hiermem, cpuTgz = tarballs['@hiermem/linux-x64'];
  assert.ok(mainTgz && fs.existsSync(mainTgz), `no main tarball in ${lastLine}`);
  assert.ok(cpuTgz && fs.existsSync(cpuTgz), `no @hiermem/linux-x64 tarball in ${lastLine}`);
  const hasCudaLib = fs.existsSync(path.join(root, 'build', 'Release', 'hiermem_cuda.so'));
  assert.equal(tarballs['@hiermem/linux-x64-cuda'] !== undefined, hasCudaLib, 'a CUDA tarball exactly when the build has hiermem_cuda.so');
  if (!hasCudaLib) assert.match(packed.stderr, /skipping @hiermem\/linux-x64-cuda/);

  const mainFiles = tarList(mainTgz);
  assert.deepEqual(mainFiles.filter((f) => /\.(node|so)$/.test(f) || f.includes('/prebuilds/') || f.includes('/build/')), [],
    'the main package ships no binaries');
  for (const f of ['package/scripts/install.cjs', 'package/dist/lib/native.js', 'package/dist/lib/cli/main.js', 'package/CMakeLists.txt']) {
    assert.ok(mainFiles.includes(f), `the main tarball lacks ${f}`);
  }
  assert.deepEqual(tarList(cpuTgz).sort(), ['package/README.md', 'package/hiermem.node', 'package/package.json']);

  // 2. a scratch project installs both tarballs from the local files
  const scratch = path.join(work, 'scratch');
  fs.mkdirSync(scratch);
  fs.writeFileSync(path.join(scratch, 'package.json'), JSON.stringify({
    name: 'hiermem-scratch', version: '1.0.0', private: true,
    allowScripts: { hiermem: true }, // reviewed: its install script only checks the prebuild here
  }, null, 2) + '\n');
  const installArgs = (mode: string) => ['install', mode, '--no-audit', '--no-fund', '--foreground-scripts', mainTgz, cpuTgz];
  const t0 = Date.now();
  let install = run('npm', installArgs('--offline'), scratch, 120_000);
  if (install.status !== 0 && /ENOTCACHED|offline/i.test(install.stderr + install.stdout)) {
    // npm ci caches tarballs, not always every registry document a fresh resolution needs
    t.diagnostic(`offline install could not resolve from npm's cache; retrying with --prefer-offline:\n${install.stderr.trim().split('\n').slice(-5).join('\n')}`);
    install = run('npm', installArgs('--prefer-offline'), scratch, 120_000);
  }
  const installSec = (Date.now() - t0) / 1000;
  assert.equal(install.status, 0, describeRun('npm install', install));
  t.diagnostic(`npm install took ${installSec.toFixed(1)} s`);
  const installed = path.join(scratch, 'node_modules', 'hiermem');
  assert.ok(fs.existsSync(path.join(installed, 'package.json')), 'hiermem is not installed');
  assert.ok(fs.existsSync(path.join(scratch, 'node_modules', '@hiermem', 'linux-x64', 'hiermem.node')), '@hiermem/linux-x64 is not installed');
  assert.ok(!fs.existsSync(path.join(installed, 'build')), 'the install script compiled the addon although a prebuild was installed');
  assert.match(install.stderr + install.stdout, /using the prebuild in @hiermem\/linux-x64/, 'the install script did not report the prebuild');
  assert.ok(installSec < 60, `npm install took ${installSec.toFixed(1)} s (a source build?)`);

  // 3. `hiermem info` reports the platform package's addon
  const info = run('npx', ['--no', 'hiermem', 'info'], scratch, 60_000);
  assert.equal(info.status, 0, describeRun('npx hiermem info', info));
  const report = JSON.parse(info.stdout) as { addonPath: string | null; addonSource: string | null };
  const expectedDir = fs.realpathSync(path.join(scratch, 'node_modules', '@hiermem', 'linux-x64'));
  assert.ok(report.addonPath !== null, 'info gives no addonPath');
  assert.equal(fs.realpathSync(path.dirname(report.addonPath)), expectedDir, `addon loaded from ${report.addonPath}`);
  assert.equal(report.addonSource, 'platform-package');

  // 4. a short training run on a tiny corpus
  const corpus = path.join(scratch, 'corpus.txt');
  const lines = Array.from({ length: 40 }, (_, i) => `Fact ${i}: the element number ${i + 1} sits in period ${1 + (i % 7)}.`);
  fs.writeFileSync(corpus, lines.join('\n\n') + '\n');
  const runDir = path.join(scratch, 'run');
  const train = run('npx', ['--no', 'hiermem', 'train', '--corpus', corpus, '--preset', 'tiny', '--steps', '3', '--batch-size', '2',
    '--warmup', '1', '--eval-every', '3', '--threads', '1', '--out', runDir, '--json', '--no-progress'], scratch, 60_000);
  assert.equal(train.status, 0, describeRun('npx hiermem train', train));
  const summary = JSON.parse(train.stdout.trim().split('\n').pop() ?? '') as { steps: number; finalLoss: number | null };
  assert.equal(summary.steps, 3);
  assert.ok(summary.finalLoss !== null && Number.isFinite(summary.finalLoss));
  for (const f of ['summary.json', 'checkpoint.safetensors', 'metrics.jsonl', 'loss.svg']) {
    assert.ok(fs.existsSync(path.join(runDir, f)), `train wrote no ${f}`);
  }
});

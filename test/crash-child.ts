/**
 * The hiermem CLI with fault-injection points, for test/crash-resume.test.ts (not a test itself).
 *
 *   node dist/test/crash-child.js train ...        same arguments as `hiermem train ...`
 *
 * HIERMEM_TEST_PAUSE="<op>:<regex>:<n>" (op = rename | unlink | write) stops the process at the
 * n-th (1-based) call of that file operation on a file whose base name matches <regex>:
 *   rename: before renaming a temp file onto the target (the temp file is complete);
 *   unlink: before removing the file (e.g. the bank of an older checkpoint);
 *   write:  after the n-th write into the file (a temp file partly written).
 * It then prints "HIERMEM-TEST PAUSED <op> <name>" on stderr and waits to be killed. The hooks
 * wrap node:fs/promises (syncBuiltinESMExports makes lib/'s named imports see them), so the
 * library code under test is unchanged.
 */
import { createRequire, syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import type { FileHandle } from 'node:fs/promises';

const require = createRequire(import.meta.url);
const fsp = require('node:fs/promises') as typeof import('node:fs/promises');

const spec = process.env.HIERMEM_TEST_PAUSE;
if (spec) {
  const m = /^(rename|unlink|write):(.*):(\d+)$/.exec(spec);
  if (!m) throw new Error(`bad HIERMEM_TEST_PAUSE ${spec}`);
  const [, op, pattern, nth] = m as unknown as [string, string, string, string];
  const re = new RegExp(pattern);
  let count = 0;
  const pause = async (name: string): Promise<void> => {
    process.stderr.write(`HIERMEM-TEST PAUSED ${op} ${name}\n`);
    setInterval(() => undefined, 1 << 30); // keep the process alive until the test kills it
    await new Promise(() => undefined);
  };
  const hit = (file: string) => re.test(path.basename(file)) && ++count === Number(nth);

  if (op === 'rename') {
    const orig = fsp.rename;
    (fsp as { rename: typeof orig }).rename = async (from, to) => {
      if (hit(String(to))) await pause(path.basename(String(to)));
      return orig(from, to);
    };
  } else if (op === 'unlink') {
    const orig = fsp.unlink;
    (fsp as { unlink: typeof orig }).unlink = async (file) => {
      if (hit(String(file))) await pause(path.basename(String(file)));
      return orig(file);
    };
  } else {
    // remember which file each handle writes, then count writes into matching files
    const names = new WeakMap<FileHandle, string>();
    const origOpen = fsp.open;
    (fsp as { open: typeof origOpen }).open = async (...args: Parameters<typeof origOpen>) => {
      const fh = await origOpen(...args);
      names.set(fh, String(args[0]));
      return fh;
    };
    const probe = await origOpen(process.execPath, 'r');
    const proto = Object.getPrototypeOf(probe) as { write: (...a: unknown[]) => Promise<unknown> };
    await probe.close();
    const origWrite = proto.write;
    proto.write = async function (this: FileHandle, ...a: unknown[]) {
      const out = await origWrite.apply(this, a);
      const name = names.get(this);
      if (name !== undefined && hit(name)) await pause(path.basename(name));
      return out;
    };
  }
  syncBuiltinESMExports();
}

// the CLI parses process.argv: [node, script, command, ...flags] as when run as `hiermem`
await import('../lib/cli/main.js');

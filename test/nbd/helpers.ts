// Shared test plumbing: a temp folder per test file, hashing, and running Debian's qemu tools.

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function tempDir(prefix: string): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `drsite-${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function nbdUri(socketPath: string, exportName: string): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socketPath}`;
}

/** Runs qemu-io on an NBD export with the given -c commands (`unmap` passes discards down); rejects with its output on failure. */
export async function qemuIo(uri: string, commands: string[], unmap = false): Promise<string> {
  const args = ['-f', 'raw'];
  if (unmap) args.push('-d', 'unmap');
  for (const c of commands) args.push('-c', c);
  args.push(uri);
  const { stdout, stderr } = await run('qemu-io', args, { maxBuffer: 16 << 20 }).catch((e: { stdout?: string; stderr?: string }) => {
    throw new Error(`qemu-io ${commands.join(' ; ')} exited non-zero:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  });
  // qemu-io reports failed commands on stdout/stderr but exits 0 in some versions: catch both.
  const out = stdout + stderr;
  if (/Pattern verification failed|failed:|error/i.test(out)) throw new Error(`qemu-io ${commands.join(' ; ')}:\n${out}`);
  return out;
}

export async function qemuImg(args: string[]): Promise<string> {
  const { stdout } = await run('qemu-img', args, { maxBuffer: 16 << 20 });
  return stdout;
}

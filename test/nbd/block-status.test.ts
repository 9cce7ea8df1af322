// Structured replies and NBD_CMD_BLOCK_STATUS against QEMU's own server (qemu-nbd from Debian's
// qemu-utils): a qcow2 image with a persistent dirty bitmap, written by qemu-io, exported with
// `-B`; the dirty extents we read are exactly the written ranges, and structured READs return the
// bytes (and holes as zeroes). Our own server refuses structured replies with a clear error.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { rangesWith, STATE, STATE_DIRTY } from '../../src/nbd/block-status.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import { NbdServer } from '../../src/nbd/server.ts';
import { FileBlockDevice } from './file-block-device.ts';
import { qemuImg, sha256, tempDir } from './helpers.ts';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { untilListening } from '../support/sockets.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
let dir: Awaited<ReturnType<typeof tempDir>>;
let nbd: ChildProcess;
let socketPath: string;

beforeAll(async () => {
  dir = await tempDir('nbd-status');
  const img = join(dir.path, 'disk.qcow2');
  await qemuImg(['create', '-q', '-f', 'qcow2', img, String(SIZE)]);
  // Written before the bitmap exists: allocated, but not dirty.
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', img]);
  await qemuImg(['bitmap', '--add', '-g', '4096', img, 'b0']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 64k', '-c', 'write -P 0xcd 5M 4k', '-c', 'write -P 0xef 8388608 12k', img]);
  socketPath = join(dir.path, 'nbd.sock');
  nbd = spawn('qemu-nbd', ['-k', socketPath, '-t', '-e', '4', '-f', 'qcow2', '-r', '-B', 'b0', '-x', 'disk', img], { stdio: 'ignore' });
  await untilListening(socketPath, { proc: nbd, what: 'qemu-nbd' });
});

afterAll(async () => {
  nbd?.kill();
  await dir?.remove();
});

describe('NBD block status against qemu-nbd', () => {
  test('the qemu:dirty-bitmap context yields exactly the ranges written after the bitmap was added', async () => {
    const c = await NbdClient.connect(socketPath, 'disk', { metaContexts: ['qemu:dirty-bitmap:b0', 'base:allocation'] });
    expect([...c.contexts.values()].sort()).toEqual(['base:allocation', 'qemu:dirty-bitmap:b0']);
    const extents = await c.blockStatusRange('qemu:dirty-bitmap:b0', 0, c.size);
    expect(extents.reduce((n, e) => n + e.length, 0)).toBe(SIZE);
    expect(rangesWith(extents, STATE_DIRTY, 0, c.size)).toEqual([
      { offset: 1 * MiB, length: 64 * 1024 },
      { offset: 5 * MiB, length: 4096 },
      { offset: 8 * MiB, length: 12 * 1024 },
    ]);
    // base:allocation: the unwritten rest of the image reads as zeroes.
    const alloc = await c.blockStatusRange('base:allocation', 0, c.size);
    const zero = rangesWith(alloc, STATE.ZERO, 0, c.size);
    expect(zero.some((z) => z.offset <= 2 * MiB && z.offset + z.length >= 3 * MiB)).toBe(true);
    expect(zero.some((z) => z.offset <= 1 * MiB && z.offset + z.length > 1 * MiB)).toBe(false);
    // A range in the middle: block status starts at the asked offset.
    const mid = await c.blockStatusRange('qemu:dirty-bitmap:b0', 1 * MiB + 4096, 8192);
    expect(rangesWith(mid, STATE_DIRTY, 1 * MiB + 4096, 8192)).toEqual([{ offset: 1 * MiB + 4096, length: 8192 }]);
    await c.close();
  });

  test('structured READ replies carry the data, holes read as zeroes', async () => {
    const c = await NbdClient.connect(socketPath, 'disk', { metaContexts: ['base:allocation'] });
    expect(sha256(await c.read(1 * MiB, 64 * 1024))).toBe(sha256(Buffer.alloc(64 * 1024, 0xab)));
    expect(sha256(await c.read(0, 64 * 1024))).toBe(sha256(Buffer.alloc(64 * 1024, 0x11)));
    const across = await c.read(5 * MiB - 4096, 3 * 4096);
    expect(sha256(across)).toBe(sha256(Buffer.concat([Buffer.alloc(4096), Buffer.alloc(4096, 0xcd), Buffer.alloc(4096)])));
    expect(sha256(await c.read(12 * MiB, 2 * MiB))).toBe(sha256(Buffer.alloc(2 * MiB)));
    await c.close();
  });

  test('a context the export does not offer is refused by name', async () => {
    await expect(NbdClient.connect(socketPath, 'disk', { metaContexts: ['qemu:dirty-bitmap:nope'] })).rejects.toThrow(
      'NBD export "disk" offers no metadata context qemu:dirty-bitmap:nope',
    );
  });

  test('our own server (simple replies only) refuses structured replies clearly, and plain clients still work', async () => {
    const path = join(dir.path, 'own.sock');
    const device = await FileBlockDevice.create(join(dir.path, 'own.img'), MiB);
    const server = await NbdServer.listen(path, new Map([['d', device]]));
    try {
      await expect(NbdClient.connect(path, 'd', { metaContexts: ['base:allocation'] })).rejects.toThrow(/refused structured replies/);
      const c = await NbdClient.connect(path, 'd');
      await c.write(4096, Buffer.alloc(4096, 7));
      expect(sha256(await c.read(4096, 4096))).toBe(sha256(Buffer.alloc(4096, 7)));
      await expect(c.blockStatus(0, 4096)).rejects.toThrow(/needs a metadata context/);
      await c.close();
    } finally {
      await server.close();
      await device.close();
    }
  });
});

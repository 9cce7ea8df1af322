// Our NBD server against QEMU's own clients (Debian qemu-utils): what they write is exactly what
// the backing file holds, and what we write they read back.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { NbdServer } from '../../src/nbd/server.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import { FileBlockDevice } from './file-block-device.ts';
import { nbdUri, qemuImg, qemuIo, sha256, tempDir } from './helpers.ts';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

let dir: Awaited<ReturnType<typeof tempDir>>;
let device: FileBlockDevice;
let server: NbdServer;
let socketPath: string;
let diskPath: string;
let uri: string;
/** What the disk must hold: every write the tests make is applied here too. */
const reference = Buffer.alloc(SIZE);

beforeAll(async () => {
  dir = await tempDir('nbd-qemu');
  diskPath = join(dir.path, 'disk0.img');
  socketPath = join(dir.path, 'nbd.sock');
  device = await FileBlockDevice.create(diskPath, SIZE);
  server = await NbdServer.listen(socketPath, new Map([['disk0', device]]));
  uri = nbdUri(socketPath, 'disk0');
});

afterAll(async () => {
  await server?.close();
  await device?.close();
  await dir?.remove();
});

describe('qemu-io through our NBD export', () => {
  test('writes a 1 MiB pattern and reads it back verified', async () => {
    const out = await qemuIo(uri, ['write -P 0xab 0 1M', 'read -P 0xab 0 1M']);
    expect(out).toContain('wrote 1048576/1048576 bytes at offset 0');
    expect(out).toContain('read 1048576/1048576 bytes at offset 0');
    reference.fill(0xab, 0, MiB);
    expect(sha256(await readFile(diskPath))).toBe(sha256(reference));
  });

  test('writes, write -z, discard and flush at several offsets land byte-exact in the backing file', async () => {
    const callsBefore = device.calls.length;
    // Discard is only passed down when qemu-io opens the image with -d unmap.
    const commands: [string, () => void][] = [
      ['write -P 0x11 0 64k', () => reference.fill(0x11, 0, 64 * 1024)],
      ['write -P 0x22 1M 512k', () => reference.fill(0x22, MiB, MiB + 512 * 1024)],
      ['write -P 0x33 3146240 1536', () => reference.fill(0x33, 3146240, 3146240 + 1536)],
      ['write -z 1114112 128k', () => reference.fill(0, 1114112, 1114112 + 128 * 1024)],
      ['discard 1310720 64k', () => reference.fill(0, 1310720, 1310720 + 64 * 1024)],
      ['write -P 0x44 15M 1M', () => reference.fill(0x44, 15 * MiB, 16 * MiB)],
      ['write -P 0x55 8M 2M', () => reference.fill(0x55, 8 * MiB, 10 * MiB)],
      ['write -P 0x66 4095 3', () => reference.fill(0x66, 4095, 4098)],
      ['flush', () => {}],
    ];
    const out = await qemuIo(`${uri}`, commands.map(([c]) => c).concat('read -P 0x44 15M 1M'), true);
    for (const [, apply] of commands) apply();
    expect(out).toContain('discard 65536/65536 bytes at offset 1310720');
    expect(sha256(await readFile(diskPath))).toBe(sha256(reference));

    const calls = device.calls.slice(callsBefore);
    // write -z arrived as WRITE_ZEROES and discard as TRIM, both executed as writeZeroes.
    expect(calls).toContainEqual({ op: 'writeZeroes', offset: 1114112, length: 128 * 1024 });
    expect(calls).toContainEqual({ op: 'writeZeroes', offset: 1310720, length: 64 * 1024 });
    expect(calls.some((c) => c.op === 'flush')).toBe(true);
  });

  test('a pattern written through our client reads back through qemu-io', async () => {
    const client = await NbdClient.connect(socketPath, 'disk0');
    try {
      await client.write(2 * MiB, Buffer.alloc(256 * 1024, 0xcd));
      await client.flush();
    } finally {
      await client.close();
    }
    reference.fill(0xcd, 2 * MiB, 2 * MiB + 256 * 1024);
    await qemuIo(uri, ['read -P 0xcd 2M 256k']);
    // The check has teeth: one byte past the pattern is zero, so a longer read must fail.
    await expect(qemuIo(uri, ['read -P 0xcd 2M 260k'])).rejects.toThrow(/Pattern verification failed/);
  });

  test('qemu-img info reports the size and qemu-img convert copies the export byte for byte', async () => {
    const client = await NbdClient.connect(socketPath, 'disk0');
    try {
      const writes = randomWrites(64, SIZE, 7, { maxBlocks: 16 });
      // Pipelined: all in flight at once; the server applies them in order, as the reference does.
      await Promise.all([...writes.map((w) => client.write(w.offset, w.data)), client.flush()]);
      for (const w of writes) w.data.copy(reference, w.offset);
    } finally {
      await client.close();
    }
    const info = JSON.parse(await qemuImg(['info', '--output=json', uri])) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(SIZE);

    const out = join(dir.path, 'out.img');
    await writeFile(out, '');
    await qemuImg(['convert', '-f', 'raw', '-O', 'raw', uri, out]);
    const copied = await readFile(out);
    expect(copied.length).toBe(SIZE);
    expect(sha256(copied)).toBe(sha256(reference));
    expect(sha256(await readFile(diskPath))).toBe(sha256(reference));
  });

  test('two qemu-io processes at once on one export both succeed (each on its own connection)', async () => {
    await Promise.all([
      qemuIo(uri, ['write -P 0x77 4M 1M', 'read -P 0x77 4M 1M']),
      qemuIo(uri, ['write -P 0x88 6M 1M', 'read -P 0x88 6M 1M']),
    ]);
    reference.fill(0x77, 4 * MiB, 5 * MiB);
    reference.fill(0x88, 6 * MiB, 7 * MiB);
    expect(sha256(await readFile(diskPath))).toBe(sha256(reference));
  });

  test('QEMU honours the minimum block size we advertise through NBD_OPT_GO: it aligns by itself', async () => {
    const path = join(dir.path, 'aligned.img');
    const aligned = await FileBlockDevice.create(path, MiB);
    const strict = await NbdServer.listen(join(dir.path, 'aligned.sock'), new Map([['a', aligned]]), { minBlockSize: 4096 });
    try {
      await qemuIo(nbdUri(strict.socketPath, 'a'), ['write -P 0x99 4095 3', 'read -P 0x99 4095 3']);
      expect(aligned.calls.length).toBeGreaterThan(0);
      for (const c of aligned.calls) {
        expect(c.offset % 4096).toBe(0);
        expect(c.length % 4096).toBe(0);
      }
      const expected = Buffer.alloc(MiB);
      expected.fill(0x99, 4095, 4098);
      expect(sha256(await readFile(path))).toBe(sha256(expected));
    } finally {
      await strict.close();
      await aligned.close();
    }
  });
});

// The workload generator: same seed, same bytes (through NBD or straight into a device), and a
// rate limit that holds in bytes against clock time (a manual clock, so nothing depends on speed).

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdServer } from '../../src/nbd/server.ts';
import { randomWrites, runWorkload } from '../../src/demo/workload.ts';
import { ManualClock, type Clock } from '../../src/model/clock.ts';
import { TerminalError } from '../../src/model/errors.ts';
import { FileBlockDevice } from './file-block-device.ts';
import { sha256, tempDir } from './helpers.ts';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;

let dir: Awaited<ReturnType<typeof tempDir>>;
const devices: FileBlockDevice[] = [];
let n = 0;

async function newDevice(size = SIZE): Promise<{ device: FileBlockDevice; path: string }> {
  const path = join(dir.path, `w${n++}.img`);
  const device = await FileBlockDevice.create(path, size);
  devices.push(device);
  return { device, path };
}

beforeAll(async () => {
  dir = await tempDir('nbd-workload');
});

afterAll(async () => {
  for (const d of devices) await d.close();
  await dir?.remove();
});

describe('runWorkload', () => {
  test('is deterministic for a seed: the same bytes twice through NBD, and the same again straight into a device', async () => {
    const opts = { pattern: 'mixed', seed: 11, totalBytes: 3 * MiB, zeroFraction: 0.1, compressible: 0.5 } as const;
    const a = await newDevice();
    const b = await newDevice();
    const server = await NbdServer.listen(join(dir.path, 'w.sock'), new Map([['a', a.device], ['b', b.device]]));
    try {
      const ra = await runWorkload({ socketPath: server.socketPath, exportName: 'a' }, { ...opts, queueDepth: 8 });
      const rb = await runWorkload({ socketPath: server.socketPath, exportName: 'b' }, opts);
      expect(ra).toEqual(rb);
      expect(ra.bytesWritten).toBe(3 * MiB);
      expect(ra.reads).toBeGreaterThan(0);
      expect(ra.zeroWrites).toBeGreaterThan(0);
    } finally {
      await server.close();
    }
    const direct = await newDevice();
    const rc = await runWorkload({ device: direct.device }, opts);
    expect(rc.writes).toBeGreaterThan(0);

    const hashes = await Promise.all([a.path, b.path, direct.path].map(async (p) => sha256(await readFile(p))));
    expect(new Set(hashes).size).toBe(1);
    expect(hashes[0]).not.toBe(sha256(Buffer.alloc(SIZE)));

    const other = await newDevice();
    await runWorkload({ device: other.device }, { ...opts, seed: 12 });
    expect(sha256(await readFile(other.path))).not.toBe(hashes[0]);
  });

  test('sequential writes one block after another and wraps at the end of the disk', async () => {
    const { device } = await newDevice(64 * 1024);
    const r = await runWorkload({ device }, { pattern: 'sequential', seed: 1, totalBytes: 80 * 1024, blockSize: 8192 });
    expect(r.writes).toBe(10);
    expect(device.calls.map((c) => c.offset / 8192)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 0, 1]);
    expect(device.calls.every((c) => c.op === 'write' && c.length === 8192)).toBe(true);
  });

  test('random writes stay block-aligned inside the disk', async () => {
    const { device } = await newDevice();
    await runWorkload({ device }, { pattern: 'random', seed: 3, totalBytes: MiB });
    expect(device.calls).toHaveLength(256);
    for (const c of device.calls) {
      expect(c.offset % 4096).toBe(0);
      expect(c.offset + c.length).toBeLessThanOrEqual(SIZE);
    }
    expect(new Set(device.calls.map((c) => c.offset)).size).toBeGreaterThan(200);
  });

  test('the rate limit holds in bytes: never more than rate x elapsed + one block', async () => {
    // Time moves only while the workload sleeps, so how fast the file writes is irrelevant.
    const manual = new ManualClock();
    let sleeping = 0;
    const clock: Clock = {
      now: () => manual.now(),
      sleep: (ms) => {
        sleeping++;
        return manual.sleep(ms).finally(() => sleeping--);
      },
    };
    const start = clock.now();
    const { device } = await newDevice();
    const rate = 64 * 1024; // bytes per second
    const samples: { at: number; before: number; length: number }[] = [];
    let written = 0;
    const timed = {
      size: device.size,
      read: (o: number, l: number) => device.read(o, l),
      write: (o: number, d: Buffer) => {
        samples.push({ at: clock.now(), before: written, length: d.length });
        written += d.length;
        return device.write(o, d);
      },
      writeZeroes: (o: number, l: number) => device.writeZeroes(o, l),
      flush: () => device.flush(),
    };
    let done = false;
    const run = runWorkload({ device: timed }, { pattern: 'random', seed: 9, durationMs: 10_000, rate, clock }).finally(
      () => (done = true),
    );
    while (!done) {
      if (sleeping > 0) await manual.advance(25);
      else await new Promise((r) => setImmediate(r));
    }
    const result = await run;
    for (const s of samples) {
      expect(s.before + s.length).toBeLessThanOrEqual((rate * (s.at - start)) / 1000 + 4096);
    }
    // Ten seconds at 64 KiB/s: a write starts at 0, 62.5 ms, 125 ms... up to 9937.5 ms.
    expect(result.bytesWritten).toBe(rate * 10);
    expect(result.bytesWritten).toBe(written);
  });

  test('compressible fraction shapes what zstd makes of the data; zeroFraction 1 writes only zeroes', async () => {
    const ratios: number[] = [];
    for (const compressible of [0, 0.75]) {
      const { device, path } = await newDevice(MiB);
      await runWorkload({ device }, { pattern: 'sequential', seed: 4, totalBytes: MiB, compressible });
      const raw = await readFile(path);
      const packed = zlib.zstdCompressSync(raw, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 1 } });
      ratios.push(packed.length / raw.length);
    }
    expect(ratios[0]).toBeGreaterThan(0.99);
    expect(ratios[1]).toBeGreaterThan(0.2);
    expect(ratios[1]).toBeLessThan(0.3);

    const zero = await newDevice(MiB);
    await zero.device.write(0, Buffer.alloc(MiB, 0xff));
    const r = await runWorkload({ device: zero.device }, { pattern: 'sequential', seed: 4, totalBytes: MiB, zeroFraction: 1 });
    expect(r.zeroWrites).toBe(r.writes);
    expect(sha256(await readFile(zero.path))).toBe(sha256(Buffer.alloc(MiB)));
  });

  test('an abort signal stops it early and says so; it refuses to run without a bound', async () => {
    const { device } = await newDevice();
    const controller = new AbortController();
    const clock = new ManualClock();
    const run = runWorkload(
      { device },
      { pattern: 'random', seed: 2, durationMs: 60_000, rate: 4096, clock, signal: controller.signal },
    );
    await clock.advance(3000);
    controller.abort();
    const r = await run;
    expect(r.aborted).toBe(true);
    expect(r.bytesWritten).toBeLessThanOrEqual(4 * 4096);

    const e = await runWorkload({ device }, { pattern: 'random', seed: 2 }).catch((err: unknown) => err);
    expect(TerminalError.is(e) && e.code).toBe('invalid-argument');
  });
});

describe('randomWrites', () => {
  test('gives the same aligned, in-bounds list for the same arguments and a different one for another seed', () => {
    const a = randomWrites(100, SIZE, 5, { blockSize: 512, maxBlocks: 8 });
    const b = randomWrites(100, SIZE, 5, { blockSize: 512, maxBlocks: 8 });
    expect(a.map((w) => [w.offset, sha256(w.data)])).toEqual(b.map((w) => [w.offset, sha256(w.data)]));
    for (const w of a) {
      expect(w.offset % 512).toBe(0);
      expect(w.data.length % 512).toBe(0);
      expect(w.data.length).toBeLessThanOrEqual(8 * 512);
      expect(w.offset + w.data.length).toBeLessThanOrEqual(SIZE);
    }
    const c = randomWrites(100, SIZE, 6, { blockSize: 512, maxBlocks: 8 });
    expect(c.map((w) => w.offset)).not.toEqual(a.map((w) => w.offset));
  });
});

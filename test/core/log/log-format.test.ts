import { createHmac } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RetryableError, TerminalError } from '../../../src/model/errors.ts';
import type { Extent } from '../../../src/core/types.ts';
import {
  ENTRY_BYTES, FOOTER_BYTES, FRAME_HEADER_BYTES, PREAMBLE_BYTES, MAX_RECORD_BYTES, coalesce, encodeLog, openLog, readLogHeader, writeLog,
} from '../../../src/core/log/log-format.ts';
import { MiB, applyToReference, header, newKeys, randomWrites, sha, tempDir } from '../replica/helpers.ts';

const keys = newKeys();
let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir('logfmt')));
afterAll(() => cleanup());

async function collect(it: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

async function rejection(p: Promise<unknown>): Promise<RetryableError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(RetryableError.is(e), `expected a RetryableError, got ${String(e)}`).toBe(true);
  expect((e as RetryableError).code).toBe('integrity');
  return e as RetryableError;
}

/** Re-seals a tampered log with the MAC key: models an attacker holding the MAC key only, so the GCM layer must catch it. */
function reseal(file: Buffer, k = keys): Buffer {
  const out = Buffer.from(file);
  createHmac('sha256', k.macKey).update(out.subarray(0, out.length - 32)).digest().copy(out, out.length - 32);
  return out;
}

describe('coalesce', () => {
  it('keeps the latest write per byte, merges neighbours, turns zero blocks into metadata', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const size = 4 * MiB;
      const writes = randomWrites(seed, size, 200, { maxLength: 300 << 10 });
      const base = Buffer.alloc(size, 0xab); // a non-zero base exposes ranges coalesce forgot
      const ref = Buffer.from(base);
      applyToReference(ref, writes);
      const out = coalesce(writes);
      const got = Buffer.from(base);
      applyToReference(got, out);
      expect(sha(got)).toBe(sha(ref));
      for (let i = 0; i < out.length; i++) {
        const e = out[i];
        const len = 'data' in e ? e.data.length : e.length;
        if (i > 0) {
          const p = out[i - 1];
          expect(e.offset).toBeGreaterThanOrEqual(p.offset + ('data' in p ? p.data.length : p.length));
        }
        if ('data' in e) {
          expect(len).toBeLessThanOrEqual(MAX_RECORD_BYTES);
          // no aligned all-zero 4 KiB block left inside a data record
          for (let b = Math.ceil(e.offset / 4096) * 4096; b + 4096 <= e.offset + len; b += 4096) {
            expect(e.data.subarray(b - e.offset, b - e.offset + 4096).every((x) => x === 0)).toBe(false);
          }
        }
      }
    }
  });

  it('resolves overlapping writes exactly (latest wins) and merges adjacent ones', () => {
    const a = Buffer.alloc(8192, 1);
    const b = Buffer.alloc(4096, 2);
    const c = Buffer.alloc(100, 3);
    const out = coalesce([
      { offset: 0, data: a },
      { offset: 2048, data: b },
      { offset: 8192, data: Buffer.alloc(4096, 4) },
      { offset: 4000, data: c },
      { offset: 16384, length: 4096, zero: true },
      { offset: 20480, data: Buffer.alloc(4096) },
    ]);
    expect(out.map((e) => ('data' in e ? ['d', e.offset, e.data.length] : ['z', e.offset, e.length]))).toEqual([
      ['d', 0, 12288],
      ['z', 16384, 8192],
    ]);
    const d = (out[0] as { data: Buffer }).data;
    expect(d[0]).toBe(1);
    expect(d[2048]).toBe(2);
    expect(d[4000]).toBe(3);
    expect(d[4099]).toBe(3);
    expect(d[4100]).toBe(2);
    expect(d[6144]).toBe(1);
    expect(d[8192]).toBe(4);
  });
});

describe('log format', () => {
  it('round-trips mixed random, compressible and zero data through writeLog and openLog', async () => {
    const h = header({ diskId: 'disk0', sequence: 7, diskSize: 16 * MiB });
    const writes = randomWrites(42, h.diskSize, 300);
    const extents = coalesce(writes);
    const path = join(dir, 'roundtrip.hrl');
    const summary = await writeLog(h, extents, keys, path);
    const log = await openLog(path, keys, { relationshipId: h.relationshipId, diskId: 'disk0', sequence: 7 });
    expect(log.header).toEqual(h);
    expect(await readLogHeader(path)).toEqual(h);
    const back = await collect(log.records());
    expect(back.length).toBe(extents.length);
    expect(summary.records).toBe(extents.length);
    let dataBytes = 0;
    let zeroBytes = 0;
    back.forEach((e, i) => {
      const x = extents[i];
      expect(e.offset).toBe(x.offset);
      if ('data' in x) {
        expect('data' in e && e.data.equals(x.data)).toBe(true);
        dataBytes += x.data.length;
      } else {
        expect('zero' in e && e.length === x.length).toBe(true);
        zeroBytes += x.length;
      }
    });
    expect({ dataBytes: summary.dataBytes, zeroBytes: summary.zeroBytes }).toEqual({ dataBytes, zeroBytes });
    expect(summary.bytes).toBe((await readFile(path)).length);
    expect(log.summary.digest).toBe(summary.digest);
    // compressible text and zero extents make the file smaller than the payload it covers
    expect(summary.bytes).toBeLessThan(dataBytes);
  });

  it('splits large extents into records of at most 1 MiB and restores them', async () => {
    const h = header({ diskId: 'd', sequence: 1, diskSize: 8 * MiB });
    const big = randomWrites(9, 3 * MiB + 5, 1, { maxLength: 3 * MiB + 5 })[0];
    const data = 'data' in big ? big.data : Buffer.alloc(big.length, 7);
    const buf = await encodeLog(h, [{ offset: 4096, data }, { offset: 4 * MiB, length: 4 * MiB, zero: true }], keys);
    const path = join(dir, 'split.hrl');
    await writeFile(path, buf);
    const log = await openLog(path, keys);
    expect(log.index.every((r) => r.zero || r.length <= MAX_RECORD_BYTES)).toBe(true);
    const joined = Buffer.concat((await collect(log.records())).filter((e) => 'data' in e).map((e) => (e as { data: Buffer }).data));
    expect(joined.equals(data)).toBe(true);
  });

  it('rejects a flipped byte anywhere (preamble, header, record, payload, footer) and every truncation', async () => {
    const h = header({ diskId: 'disk0', sequence: 3 });
    const good = await encodeLog(h, [
      { offset: 0, data: Buffer.from('hello replica '.repeat(40)) },
      { offset: 8192, length: 4096, zero: true },
      { offset: 65536, data: randomWrites(5, 1 << 20, 1, { maxLength: 700, aligned: false }).map((e) => ('data' in e ? e.data : Buffer.alloc(1)))[0] },
    ], keys);
    const path = join(dir, 'flip.hrl');
    // every single byte position of the file, each flipped on its own
    for (let i = 0; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i] ^= 0x5a;
      await writeFile(path, bad);
      const e = await rejection(openLog(path, keys));
      expect(e.message).toContain(path);
    }
    for (const n of [0, 10, PREAMBLE_BYTES, PREAMBLE_BYTES + 20, good.length - FOOTER_BYTES, good.length - 1]) {
      await writeFile(path, good.subarray(0, n));
      await rejection(openLog(path, keys));
    }
    await writeFile(path, Buffer.concat([good, Buffer.from('x')]));
    await rejection(openLog(path, keys));
    await writeFile(path, good);
    await expect(collect((await openLog(path, keys)).records())).resolves.toHaveLength(3);
  });

  it('rejects a log sealed with another key, or for another disk or sequence than expected', async () => {
    const h = header({ diskId: 'disk0', sequence: 3 });
    const path = join(dir, 'expect.hrl');
    await writeLog(h, [{ offset: 0, data: Buffer.alloc(4096, 1) }], keys, path);
    expect((await rejection(openLog(path, newKeys()))).message).toContain('MAC mismatch');
    expect((await rejection(openLog(path, keys, { diskId: 'disk1' }))).message).toContain('diskId');
    expect((await rejection(openLog(path, keys, { sequence: 4 }))).message).toContain('sequence');
    await writeFile(path, Buffer.from('not a log at all, just some text that is long enough to pass the size check'.repeat(3)));
    expect((await rejection(openLog(path, keys))).message).toMatch(/footer|magic/);
  });

  it('never reuses a nonce: equal logs differ (salt); a frame moved to another offset or log fails authentication', async () => {
    const h = header({ diskId: 'disk0', sequence: 5 });
    // two 1 MiB extents: one frame each
    const extents: Extent[] = [
      { offset: 0, data: Buffer.from('A'.repeat(MiB)) },
      { offset: 2 * MiB, data: Buffer.from('B'.repeat(MiB)) },
    ];
    const one = await encodeLog(h, extents, keys);
    const two = await encodeLog(h, extents, keys);
    expect(one.length).toBe(two.length);
    expect(one.equals(two)).toBe(false);
    const frameAt = PREAMBLE_BYTES + one.readUInt32LE(PREAMBLE_BYTES - 4);
    expect(one.readUInt32LE(frameAt)).toBe(1); // one entry in frame 0
    const stored = one.readUInt32LE(frameAt + 12);
    const tableAt = frameAt + FRAME_HEADER_BYTES;
    const frameEnd = tableAt + ENTRY_BYTES + stored;
    expect(one.readUInt32LE(frameEnd)).toBe(1); // frame 1 follows
    // same plaintext, same place: tag and ciphertext still differ
    expect(one.subarray(frameAt + 16, frameAt + FRAME_HEADER_BYTES).equals(two.subarray(frameAt + 16, frameAt + FRAME_HEADER_BYTES))).toBe(false);
    expect(one.subarray(tableAt + ENTRY_BYTES, frameEnd).equals(two.subarray(tableAt + ENTRY_BYTES, frameEnd))).toBe(false);

    const path = join(dir, 'moved.hrl');
    // the same frame claimed for another offset (table re-sealed, so only GCM can notice)
    const moved = Buffer.from(one);
    moved.writeUInt32LE(4 * MiB, tableAt);
    await writeFile(path, reseal(moved));
    const log = await openLog(path, keys);
    expect(log.index[0].offset).toBe(4 * MiB);
    expect((await rejection(collect(log.records()))).message).toContain('fails authentication');
    // when the whole log is decoded during verification, openLog itself rejects it (nothing can be
    // applied), even when only the last frame is bad
    const moved1 = Buffer.from(one);
    moved1.writeUInt32LE(6 * MiB, frameEnd + FRAME_HEADER_BYTES); // frame 1's extent claimed elsewhere
    await writeFile(path, reseal(moved1));
    expect((await rejection(openLog(path, keys, undefined, { retainBytes: 64 * MiB }))).message).toContain('fails authentication');
    // with only frame 0 in memory, the bad frame 1 is found when records() reaches it
    const partly = await openLog(path, keys, undefined, { retainBytes: MiB });
    expect((await rejection(collect(partly.records()))).message).toContain('fails authentication');
    // frame 0 of log two transplanted into log one
    const spliced = Buffer.concat([one.subarray(0, frameAt), two.subarray(frameAt, frameEnd), one.subarray(frameEnd)]);
    await writeFile(path, reseal(spliced));
    await rejection(collect((await openLog(path, keys)).records()));
    // frames swapped in order (nonce = frame index) also fail
    const second = one.subarray(frameEnd, one.length - FOOTER_BYTES);
    const swapped = Buffer.concat([one.subarray(0, frameAt), second, one.subarray(frameAt, frameEnd), one.subarray(one.length - FOOTER_BYTES)]);
    expect(swapped.length).toBe(one.length);
    await writeFile(path, reseal(swapped));
    await rejection(collect((await openLog(path, keys)).records()));
    await rejection(openLog(path, keys, undefined, { retainBytes: 64 * MiB }));
  });

  it('packs many small extents into few frames and decodes them from memory or from the file alike', async () => {
    const h = header({ diskId: 'disk0', sequence: 4, diskSize: 64 * MiB });
    const writes = randomWrites(77, h.diskSize, 3000, { maxLength: 4096, aligned: true });
    const extents = coalesce(writes);
    const buf = await encodeLog(h, extents, keys);
    const path = join(dir, 'packed.hrl');
    await writeFile(path, buf);
    // count frames by walking the layout
    let at = PREAMBLE_BYTES + buf.readUInt32LE(PREAMBLE_BYTES - 4);
    let frames = 0;
    while (at < buf.length - FOOTER_BYTES) {
      at += FRAME_HEADER_BYTES + buf.readUInt32LE(at) * ENTRY_BYTES + buf.readUInt32LE(at + 12);
      frames++;
    }
    expect(at).toBe(buf.length - FOOTER_BYTES);
    const dataBytes = extents.reduce((n, e) => n + ('data' in e ? e.data.length : 0), 0);
    expect(frames).toBeLessThanOrEqual(Math.ceil(dataBytes / MAX_RECORD_BYTES) + 1);
    expect(frames).toBeLessThan(extents.length / 50);
    const ref = Buffer.alloc(h.diskSize);
    applyToReference(ref, writes);
    // all in memory, partly in memory, none in memory
    for (const retainBytes of [256 * MiB, 3 * MiB, 0]) {
      const log = await openLog(path, keys, undefined, { retainBytes });
      expect(log.index.length).toBe(extents.length);
      const back = await collect(log.records());
      expect(back.map((e) => e.offset)).toEqual(extents.map((e) => e.offset));
      const img = Buffer.alloc(h.diskSize);
      applyToReference(img, back);
      expect(sha(img)).toBe(sha(ref));
    }
  });

  it('refuses extents outside the disk and bad headers with a TerminalError', async () => {
    const h = header({ diskId: 'disk0', sequence: 2, diskSize: 8192 });
    const e = await encodeLog(h, [{ offset: 8000, data: Buffer.alloc(400, 1) }], keys).catch((x: unknown) => x);
    expect(TerminalError.is(e) && e.code).toBe('invalid-argument');
    const e2 = await encodeLog({ ...h, sequence: 0 }, [], keys).catch((x: unknown) => x);
    expect(TerminalError.is(e2) && e2.code).toBe('invalid-argument');
  });
});

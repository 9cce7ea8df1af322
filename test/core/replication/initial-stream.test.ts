// The streamed initial copy on the replica side (core/replication/initial-stream.ts, ReplicaStore
// receiveInitialSegment): segments written as they arrive, the point visible only once every
// segment of every disk verified; forged, misplaced and torn segments change nothing visible.
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ReplicaStore } from '../../../src/core/replica/replica-store.ts';
import { encode } from '../../../src/core/log/log-format.ts';
import { SEGMENT_BYTES, segmentCount, segmentRange } from '../../../src/core/replication/initial-stream.ts';
import type { Extent, LogHeader, RelationshipKeys } from '../../../src/core/types.ts';
import { newKeys, tempDir } from '../replica/helpers.ts';

const REL = 'rel-stream';
const SIZE = 2 * SEGMENT_BYTES + (1 << 20); // three segments, the last one short
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** A disk image: random blocks, compressible text, zero runs. */
function image(seed: number): Buffer {
  const img = Buffer.alloc(SIZE);
  let x = seed;
  for (let at = 0; at < SIZE; at += 1 << 16) {
    x = (x * 1103515245 + 12345) >>> 0;
    const kind = x % 3;
    if (kind === 0) randomBytes(1 << 16).copy(img, at);
    else if (kind === 1) img.write(`block ${at} of seed ${seed} `.repeat(2000).slice(0, 1 << 16), at);
  }
  return img;
}

function* extentsOf(img: Buffer, start: number, end: number): Generator<Extent> {
  for (let at = start; at < end; at += 1 << 16) {
    const data = img.subarray(at, Math.min(end, at + (1 << 16)));
    yield data.every((b) => b === 0) ? { offset: at, length: data.length, zero: true } : { offset: at, data };
  }
}

async function segment(keys: RelationshipKeys, img: Buffer, index: number, cutId: string, diskId = 'd0'): Promise<Buffer> {
  return Buffer.concat(await segmentParts(keys, img, index, cutId, diskId));
}

/** The encoder's output as it produced it: a transport may deliver a segment in exactly these pieces. */
async function segmentParts(keys: RelationshipKeys, img: Buffer, index: number, cutId: string, diskId = 'd0'): Promise<Buffer[]> {
  const { start, end } = segmentRange(index, SIZE);
  const h: LogHeader = { relationshipId: REL, diskId, diskSize: SIZE, sequence: 1, basePoint: 0, blockSize: 4096, cutTime: 1_700_000_000_000, consistency: 'crash', kind: 'full', cutId };
  const parts: Buffer[] = [];
  await encode(h, extentsOf(img, start, end), keys, async (c) => void parts.push(c));
  return parts;
}

async function* chunks(buf: Buffer, size = 100_000): AsyncGenerator<Buffer> {
  for (let at = 0; at < buf.length; at += size) yield buf.subarray(at, at + size);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function open(keys: RelationshipKeys): Promise<ReplicaStore> {
  const t = await tempDir('initial-stream');
  cleanups.push(t.cleanup);
  return ReplicaStore.open(t.dir, keys, { relationshipId: REL, disks: [{ id: 'd0', size: SIZE }] });
}

async function imageSha(store: ReplicaStore): Promise<string> {
  const r = await store.openImage('d0');
  return sha(await r.read(0, SIZE));
}

describe('streamed initial copy into a ReplicaStore', () => {
  it('segments in order become point 1 only when the last one is in, byte for byte the source', async () => {
    const keys = newKeys();
    const store = await open(keys);
    const img = image(1);
    expect(segmentCount(SIZE)).toBe(3);
    for (let i = 0; i < 3; i++) {
      expect(await store.applyPending()).toEqual([]);
      expect(store.applied).toBe(0);
      expect(await store.receiveInitialSegment('d0', i, chunks(await segment(keys, img, i, 'cut-a')))).toEqual({ cutId: 'cut-a', segments: { d0: i + 1 } });
    }
    const applied = await store.applyPending();
    expect(applied.map((p) => p.sequence)).toEqual([1]);
    expect(store.initialProgress()).toBeUndefined();
    expect(await imageSha(store)).toBe(sha(img));
    // Once a point exists, a streamed copy is refused.
    await expect(store.receiveInitialSegment('d0', 0, chunks(await segment(keys, img, 0, 'cut-b')))).rejects.toThrow(/already holds point 1/);
  });

  it('a flipped byte, a truncated stream, a segment at the wrong index or of another cut is refused and never counted', async () => {
    const keys = newKeys();
    const store = await open(keys);
    const img = image(2);
    const s0 = await segment(keys, img, 0, 'cut-a');
    const flipped = Buffer.from(s0);
    flipped[Math.floor(flipped.length / 2)] ^= 0x40;
    await expect(store.receiveInitialSegment('d0', 0, chunks(flipped))).rejects.toMatchObject({ code: 'integrity' });
    await expect(store.receiveInitialSegment('d0', 0, chunks(s0.subarray(0, s0.length - 100)))).rejects.toMatchObject({ code: 'integrity' });
    expect(store.initialProgress()?.segments.d0 ?? 0).toBe(0);
    // Segment 1's bytes sent as segment 0: its extents lie outside segment 0's range.
    await expect(store.receiveInitialSegment('d0', 0, chunks(await segment(keys, img, 1, 'cut-a')))).rejects.toThrow(/expected one at 0/);
    // Under another relationship's keys.
    await expect(store.receiveInitialSegment('d0', 0, chunks(await segment(newKeys(), img, 0, 'cut-a')))).rejects.toMatchObject({ code: 'integrity' });
    await store.receiveInitialSegment('d0', 0, chunks(s0));
    await expect(store.receiveInitialSegment('d0', 2, chunks(await segment(keys, img, 2, 'cut-a')))).rejects.toThrow(/segment 1 expected next/);
    await expect(store.receiveInitialSegment('d0', 1, chunks(await segment(keys, img, 1, 'cut-other')))).rejects.toThrow(/belongs to cut cut-other/);
    // A repeated segment is acknowledged again, not applied twice.
    expect(await store.receiveInitialSegment('d0', 0, chunks(s0))).toEqual({ cutId: 'cut-a', segments: { d0: 1 } });
    expect(store.applied).toBe(0);
    for (const i of [1, 2]) await store.receiveInitialSegment('d0', i, chunks(await segment(keys, img, i, 'cut-a')));
    await store.applyPending();
    expect(await imageSha(store)).toBe(sha(img));
  });

  it('a torn segment of another cut leaves bytes that the retry overwrites, zero blocks included', async () => {
    const keys = newKeys();
    const store = await open(keys);
    const older = image(3);
    const newer = Buffer.alloc(SIZE); // all zeroes: every extent of the retry is a zero extent
    newer.write('only this', 5 * 4096);
    // Cut A: segment 0 done, segment 1 torn half way (its data already written).
    await store.receiveInitialSegment('d0', 0, chunks(await segment(keys, older, 0, 'cut-a')));
    const torn = await segment(keys, older, 1, 'cut-a');
    await expect(store.receiveInitialSegment('d0', 1, chunks(torn.subarray(0, torn.length >> 1)))).rejects.toMatchObject({ code: 'integrity' });
    // Reopened (a replica restart): the checkpoint survives.
    const again = await ReplicaStore.open(store.dir, keys, { relationshipId: REL, disks: [{ id: 'd0', size: SIZE }] });
    expect(again.initialProgress()).toEqual({ cutId: 'cut-a', segments: { d0: 1 } });
    // The retry of segment 1 from cut A with all-zero data must clear what the torn try wrote.
    const mixed = Buffer.from(older);
    newer.copy(mixed, SEGMENT_BYTES, SEGMENT_BYTES, 2 * SEGMENT_BYTES);
    await again.receiveInitialSegment('d0', 1, chunks(await segment(keys, mixed, 1, 'cut-a')));
    await again.receiveInitialSegment('d0', 2, chunks(await segment(keys, mixed, 2, 'cut-a')));
    await again.applyPending();
    expect(await imageSha(again)).toBe(sha(mixed));
  });

  it('segment 0 of a new cut empties the images and starts the copy again', async () => {
    const keys = newKeys();
    const store = await open(keys);
    await store.receiveInitialSegment('d0', 0, chunks(await segment(keys, image(4), 0, 'cut-a')));
    await store.receiveInitialSegment('d0', 1, chunks(await segment(keys, image(4), 1, 'cut-a')));
    const img = Buffer.alloc(SIZE);
    img.write('new cut', SIZE - 4096);
    for (let i = 0; i < 3; i++) await store.receiveInitialSegment('d0', i, chunks(await segment(keys, img, i, 'cut-b')));
    const [p] = await store.applyPending();
    expect(p.cutId).toBe('cut-b');
    expect(await imageSha(store)).toBe(sha(img));
  });
});

describe('streamed initial copy of a disk that is mostly zeroes', () => {
  it('frames holding only zero extents (no payload) are read whatever the chunking', async () => {
    const keys = newKeys();
    const store = await open(keys);
    const img = Buffer.alloc(SIZE);
    img.write('one block', SEGMENT_BYTES + 8192);
    for (let i = 0; i < 3; i++) {
      const parts = await segmentParts(keys, img, i, 'cut-z');
      await store.receiveInitialSegment('d0', i, (async function* () {
        yield* parts;
      })());
    }
    await store.applyPending();
    expect(await imageSha(store)).toBe(sha(img));
  });
});

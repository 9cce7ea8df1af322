// Shared fixtures for the replica tests: seeded random writes, a reference disk model held in
// memory, and log building through the real coalesce + writeLog path.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Extent, LogHeader, RelationshipKeys } from '../../../src/core/types.ts';
import { coalesce, writeLog } from '../../../src/core/log/log-format.ts';

export const MiB = 1 << 20;

export function newKeys(): RelationshipKeys {
  return { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
}

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `drsite-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Deterministic PRNG (mulberry32) so a failing case can be replayed from its seed. */
export function rng(seed: number): { next(): number; int(n: number): number } {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

function fillBytes(r: ReturnType<typeof rng>, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  const whole = n - (n % 4);
  for (let i = 0; i < whole; i += 4) b.writeUInt32LE((r.next() * 4294967296) >>> 0, i);
  for (let i = whole; i < n; i++) b[i] = r.int(256);
  return b;
}

/**
 * Random writes over a disk: a mix of random data, compressible text, all-zero buffers and zero
 * extents, 4 KiB-aligned by default, sometimes unaligned, sometimes overlapping each other.
 */
export function randomWrites(
  seed: number,
  diskSize: number,
  count: number,
  opts: { maxLength?: number; aligned?: boolean } = {},
): Extent[] {
  const r = rng(seed);
  const maxLen = opts.maxLength ?? 256 << 10;
  const out: Extent[] = [];
  for (let i = 0; i < count; i++) {
    const aligned = opts.aligned ?? r.next() < 0.8;
    let length = aligned ? (1 + r.int(Math.max(1, maxLen / 4096))) * 4096 : 1 + r.int(maxLen);
    let offset = aligned ? r.int(diskSize / 4096) * 4096 : r.int(diskSize);
    if (offset + length > diskSize) length = diskSize - offset;
    if (length <= 0) {
      offset = 0;
      length = 4096;
    }
    const kind = r.int(10);
    if (kind < 5) out.push({ offset, data: fillBytes(r, length) });
    else if (kind < 8) out.push({ offset, data: Buffer.from(`block ${offset} write ${i} `.repeat(Math.ceil(length / 20)).slice(0, length)) });
    else if (kind < 9) out.push({ offset, data: Buffer.alloc(length) });
    else out.push({ offset, length, zero: true });
  }
  return out;
}

/** Applies extents in order onto an in-memory reference disk. */
export function applyToReference(ref: Buffer, extents: readonly Extent[]): void {
  for (const e of extents) {
    if ('data' in e) e.data.copy(ref, e.offset);
    else ref.fill(0, e.offset, e.offset + e.length);
  }
}

export function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export function header(over: Partial<LogHeader> & Pick<LogHeader, 'diskId' | 'sequence'>): LogHeader {
  return {
    relationshipId: 'rel-web-01',
    diskSize: 8 * MiB,
    basePoint: over.sequence - 1,
    blockSize: 4096,
    cutTime: Date.UTC(2026, 0, 1) + over.sequence * 60_000,
    consistency: 'crash',
    kind: over.sequence === 1 ? 'full' : 'delta',
    cutId: `cut-${over.sequence}`,
    ...over,
  };
}

/** Coalesces a cycle's writes and writes the sealed log, as the primary does. */
export async function buildLog(
  path: string,
  h: LogHeader,
  writes: readonly Extent[],
  keys: RelationshipKeys,
): Promise<void> {
  await writeLog(h, coalesce(writes), keys, path);
}

// A chain of sealed logs for the replica-side cases: a full initial copy of noise, then points of
// random 4 KiB writes, with the SHA-256 of the disk each point leaves (index = sequence).
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from '../../src/core/disk/disk.ts';
import { coalesce, encodeLog } from '../../src/core/log/log-format.ts';
import { BLOCK_SIZE } from '../../src/core/types.ts';
import type { Extent, LogHeader, RelationshipKeys } from '../../src/core/types.ts';
import { createRng, noise } from './data.ts';

const MiB = 1 << 20;

export interface ChainOptions {
  readonly workDir: string;
  readonly relationshipId: string;
  readonly diskId: string;
  readonly size: number;
  /** Delta points after the initial copy. */
  readonly points: number;
  /** Bytes of random 4 KiB writes per point. */
  readonly perPoint: number;
  readonly keys: RelationshipKeys;
  /** Cut time of the initial copy; each point `spacingMs` later than the one before. */
  readonly t0: number;
  readonly spacingMs: number;
  /** Seeds of the initial copy's noise and of the write offsets. */
  readonly seed: number;
}

export interface Chain {
  /** `logs[sequence - 1]`: the sealed log of point `sequence`. */
  readonly logs: Buffer[];
  /** `shaAt[sequence]`: the disk after point `sequence`. */
  readonly shaAt: string[];
  /** Disk bytes the delta points change (coalesced). */
  readonly changed: number;
}

export async function encodeChain(o: ChainOptions): Promise<Chain> {
  const header = (sequence: number, kind: 'full' | 'delta'): LogHeader => ({
    relationshipId: o.relationshipId, diskId: o.diskId, diskSize: o.size, sequence, basePoint: sequence - 1, blockSize: BLOCK_SIZE,
    cutTime: o.t0 + (sequence - 1) * o.spacingMs, consistency: 'crash', kind, cutId: `cut-${sequence}`,
  });
  await mkdir(o.workDir, { recursive: true });
  const expected = join(o.workDir, 'expected.img');
  const efh = await open(expected, 'w');
  try {
    const full: Extent[] = [];
    for (let at = 0, i = 0; at < o.size; at += MiB, i++) full.push({ offset: at, data: noise(o.seed, i, MiB) });
    for (const e of full) if ('data' in e) await efh.write(e.data, 0, e.data.length, e.offset);
    const logs: Buffer[] = [await encodeLog(header(1, 'full'), full, o.keys)];
    const shaAt: string[] = ['', await sha256File(expected)];
    const rng = createRng(o.seed + 4);
    let changed = 0;
    for (let p = 2; p <= o.points + 1; p++) {
      const writes: Extent[] = [];
      for (let i = 0; i * BLOCK_SIZE < o.perPoint; i++) {
        const w = { offset: rng.int(o.size / BLOCK_SIZE) * BLOCK_SIZE, data: noise(p, i, BLOCK_SIZE) };
        writes.push(w);
        await efh.write(w.data, 0, BLOCK_SIZE, w.offset);
      }
      const c = coalesce(writes);
      changed += c.reduce((n, e) => n + ('data' in e ? e.data.length : e.length), 0);
      logs.push(await encodeLog(header(p, 'delta'), c, o.keys));
      shaAt.push(await sha256File(expected));
    }
    return { logs, shaAt, changed };
  } finally {
    await efh.close();
    await rm(expected, { force: true });
  }
}

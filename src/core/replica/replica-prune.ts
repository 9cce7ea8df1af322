// Retention on a replica: dropping the points its policy no longer keeps (their undo handed to the
// next kept point, so every kept point still reads exactly as before), merging a point's undo once
// it spans too many segments, and deleting undo segments no journal entry refers to.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isDiskFull } from '../disk-full.ts';
import { fsyncDir, unlinkIfExists } from '../log/log-io.ts';
import { selectRetained } from './recovery-points.ts';
import type { StoredPoint } from './replica-state.ts';
import { mergeUndo } from './replica-undo.ts';
import type { ReplicaCore } from './replica-core.ts';

/** A point whose undo spans more segments than this per disk gets them merged into one. */
const COMPACT_SEGMENTS = 8;

/** Drops the points the retention policy no longer keeps at time `now`; returns their sequences. Under the store's lock. */
export async function prunePoints(core: ReplicaCore, now: number): Promise<number[]> {
  const pts = core.state.points;
  if (pts.length <= 1) return [];
  const keep = selectRetained(pts, core.state.retention, now);
  for (const seq of core.pins.keys()) keep.add(seq);
  // A point is readable only if every later point captured its undo.
  for (let i = pts.length - 1, readable = true; i >= 0; i--) {
    if (!readable && i < pts.length - 1) keep.delete(pts[i].sequence);
    if (pts[i].undo === null) readable = false;
  }
  keep.add(pts[pts.length - 1].sequence);
  // Nothing to drop, but a point whose undo grew long (every point of an hour folds into the
  // newest, one segment each: 120 an hour at 30 s, up to 3,600 when continuous) is merged anyway.
  const long = pts.some((p) => p.undo && Object.values(p.undo).some((list) => list.length > COMPACT_SEGMENTS));
  if (keep.size === pts.length && !long) return [];

  // Pruned points hand their undo segments to the next kept point (older segments first), so
  // every kept point's reads resolve exactly as before; only segments older than the oldest kept
  // point are dropped. No data is copied unless a point collects too many segments.
  const kept: StoredPoint[] = [];
  const pruned: number[] = [];
  let carry: Record<string, string[]> | null = {};
  let next = core.state.nextSegment;
  for (const p of pts) {
    const merged: Record<string, string[]> | null = carry && p.undo ? concatUndo(carry, p.undo) : null;
    if (!keep.has(p.sequence)) {
      pruned.push(p.sequence);
      carry = merged;
      continue;
    }
    carry = {};
    if (kept.length === 0) {
      kept.push({ ...p, undo: Object.fromEntries(core.state.disks.map((d) => [d.id, []])) });
      continue;
    }
    let undo = merged;
    if (undo) {
      for (const [diskId, list] of Object.entries(undo)) {
        if (list.length <= COMPACT_SEGMENTS) continue;
        const name = `${p.sequence}.${diskId}.${next++}.undo`;
        const sources = await Promise.all(list.map((n) => core.undoFile(n)));
        try {
          core.counters.undoBytesWritten += await mergeUndo(sources, join(core.dir, 'undo', name));
        } catch (e) {
          // A full disk skips the merge (a later prune merges): dropping points is what frees space.
          if (!isDiskFull(e)) throw e;
          continue;
        }
        undo = { ...undo, [diskId]: [name] };
      }
    }
    kept.push({ ...p, undo });
  }
  await fsyncDir(join(core.dir, 'undo'));
  await core.saveState({ ...core.state, points: kept, nextSegment: next });
  await removeUnreferenced(core);
  return pruned;
}

/** Deletes every undo segment that neither a retained point nor the point being applied refers to. */
export async function removeUnreferenced(core: ReplicaCore): Promise<void> {
  const keep = referenced(core);
  for (const name of await readdir(join(core.dir, 'undo'))) {
    if (keep.has(name)) continue;
    await core.forgetUndo(name);
    await unlinkIfExists(join(core.dir, 'undo', name));
  }
}

function referenced(core: ReplicaCore): Set<string> {
  const names = new Set<string>();
  for (const p of [...core.state.points, ...(core.state.applying ? [core.state.applying] : [])]) {
    for (const list of Object.values(p.undo ?? {})) for (const n of list) names.add(n);
  }
  return names;
}

function concatUndo(older: Record<string, string[]>, newer: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const k of new Set([...Object.keys(older), ...Object.keys(newer)])) out[k] = [...(older[k] ?? []), ...(newer[k] ?? [])];
  return out;
}

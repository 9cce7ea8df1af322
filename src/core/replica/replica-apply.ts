// Applying one point to a replica's images (the steps replica-store.ts's opening comment lists):
// verify every disk's log, write undo for what the point overwrites, journal "applying N", write
// the images, journal "applied N", delete the logs. An apply cut short at any step is rolled
// forward by finishApplying: the journal names the point and its logs are whole.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RetryableError, TerminalError } from '../../model/errors.ts';
import { openLog, readLogHeader } from '../log/log-format.ts';
import type { VerifiedLog } from '../log/log-format.ts';
import { fsyncDir, unlinkIfExists } from '../log/log-io.ts';
import { ensureSpace } from '../disk-full.ts';
import { ImageFile, imageLength } from '../disk/image-file.ts';
import { selectRetained } from './recovery-points.ts';
import { RangeSet } from './replica-ranges.ts';
import type { StoredPoint } from './replica-state.ts';
import { UNDO_CHUNK, UndoWriter } from './replica-undo.ts';
import type { AppliedPoint, ReplicaCore } from './replica-core.ts';
import { incomingPath } from './replica-staging.ts';

/** Decoded log data kept in memory from verification to apply, over all disks of a point. */
const APPLY_RETAIN_BYTES = 128 << 20;

/** Verifies a log; a damaged one is deleted (the sender must send it again) and rejected. */
export async function verifyLog(core: ReplicaCore, path: string, diskId: string, sequence: number): Promise<VerifiedLog> {
  try {
    // Decoding while verifying spares a second pass over the file at apply.
    return await openLog(path, core.keys, { relationshipId: core.state.relationshipId, diskId, sequence },
      { retainBytes: Math.floor(APPLY_RETAIN_BYTES / core.state.disks.length) });
  } catch (e) {
    if (RetryableError.is(e) && e.code === 'integrity') {
      await unlinkIfExists(path);
      await fsyncDir(join(core.dir, 'incoming'));
    }
    throw e;
  }
}

/** Stalled on a missing point: is a later log built on a point we already passed? Then the chain is broken. */
export async function checkGap(core: ReplicaCore, pending: Map<number, Map<string, string>>): Promise<void> {
  const applied = core.state.applied;
  for (const [seq, logs] of [...pending].sort((a, b) => a[0] - b[0])) {
    if (seq <= applied + 1) continue;
    for (const [diskId, path] of logs) {
      let base: number;
      try {
        base = (await readLogHeader(path)).basePoint;
      } catch {
        continue; // unreadable headers are judged when their turn comes
      }
      if (base > applied) continue;
      const log = await verifyLog(core, path, diskId, seq);
      if (log.header.basePoint <= applied) {
        throw new TerminalError('broken-chain',
          `replica ${core.dir}: log ${path} (sequence ${seq}) is based on point ${log.header.basePoint}, but point ${applied + 1} is missing after ${applied}: resynchronisation required`);
      }
    }
  }
}

/** Applies point `sequence` from every disk's verified log. */
export async function applyPoint(core: ReplicaCore, sequence: number, logs: VerifiedLog[]): Promise<AppliedPoint> {
  const state = core.state;
  const first = logs[0].header;
  for (const log of logs) {
    const h = log.header;
    if (h.basePoint !== state.applied) {
      throw new TerminalError('broken-chain',
        `replica ${core.dir}: log ${log.path} (sequence ${sequence}) is based on point ${h.basePoint}, the replica is at ${state.applied}: resynchronisation required`);
    }
    if (h.cutId !== first.cutId || h.cutTime !== first.cutTime || h.consistency !== first.consistency) {
      throw new TerminalError('broken-chain', `replica ${core.dir}: logs of sequence ${sequence} belong to different cuts (${first.cutId}, ${h.cutId})`);
    }
    const size = core.diskSize(h.diskId);
    if (h.diskSize < size) {
      throw new TerminalError('invalid-state', `log ${log.path}: disk ${h.diskId} shrank from ${size} to ${h.diskSize} bytes`);
    }
  }
  // Undo is only worth writing when a point older than this one may stay readable.
  const needUndo = state.applied > 0 && (state.retention.additional > 0 || core.pins.size > 0);
  // Images are created zeroed and nothing touched them before a first `full` point: skip writing
  // zeroes. A first point of kind `resync` lands on an existing replica copy and must write them.
  const fresh = state.applied === 0 && state.points.length === 0 && logs.every((l) => l.header.kind === 'full');
  // Refused before anything is written: a point never stops half applied for want of room.
  await ensureSpace(core.dir, await roomFor(core, logs, needUndo, fresh));
  let undo: Record<string, string[]> | null = null;
  let next = state.nextSegment;
  let points = state.points;
  if (needUndo) {
    // Points this apply makes obsolete are folded into it now, in the same journal write, and
    // whatever their undo already saved is not saved again (see foldObsolete).
    const fold = await foldObsolete(core, first.cutTime);
    points = fold.points;
    undo = {};
    for (const log of logs) {
      const diskId = log.header.diskId;
      const name = `${sequence}.${diskId}.${next++}.undo`;
      await captureUndo(core, log, name, fold.saved.get(diskId));
      undo[diskId] = [...(fold.carry[diskId] ?? []), name];
    }
    await fsyncDir(join(core.dir, 'undo'));
  }
  const point: StoredPoint = {
    sequence,
    time: first.cutTime,
    consistency: first.consistency,
    cutId: first.cutId,
    sizes: Object.fromEntries(state.disks.map((d) => [d.id, Math.max(d.size, logs.find((l) => l.header.diskId === d.id)!.header.diskSize)])),
    undo,
  };
  await core.saveState({ ...core.state, points, applying: point, nextSegment: next });
  return rollForward(core, point, logs, fresh);
}

/**
 * Rolls forward the point the journal says is being applied (a crash, or an apply that failed
 * part way): its undo is sealed and its logs are whole, so writing them again is exact.
 */
export async function finishApplying(core: ReplicaCore): Promise<void> {
  const p = core.state.applying;
  if (!p) return;
  const logs: VerifiedLog[] = [];
  for (const d of core.state.disks) {
    const path = incomingPath(core.dir, d.id, p.sequence);
    try {
      logs.push(await openLog(path, core.keys, { relationshipId: core.state.relationshipId, diskId: d.id, sequence: p.sequence }));
    } catch (e) {
      throw new TerminalError('invalid-state',
        `replica ${core.dir}: point ${p.sequence} was being applied but its log ${path} is unusable (${(e as Error).message}); the replica needs resynchronisation`,
        { cause: e });
    }
  }
  await rollForward(core, p, logs, false);
}

/** Writes the point's logs onto the images and journals it as applied. Safe to repeat. */
async function rollForward(core: ReplicaCore, point: StoredPoint, logs: VerifiedLog[], skipZeroes: boolean): Promise<AppliedPoint> {
  let bytes = 0;
  let records = 0;
  for (const log of logs) {
    const image = await ImageFile.open(core.diskPath(log.header.diskId), 'r+', core.cipher);
    try {
      await image.grow(log.header.diskSize);
      for await (const e of log.records()) {
        records++;
        if ('data' in e) {
          await image.write(e.offset, e.data);
          bytes += e.data.length;
          core.counters.imageBytesWritten += e.data.length;
          continue;
        }
        bytes += e.length;
        if (skipZeroes) continue;
        await image.writeZeroes(e.offset, e.length);
        core.counters.imageBytesWritten += e.length;
      }
      await image.sync();
    } finally {
      await image.close();
    }
  }
  const disks = core.state.disks.map((d) => ({ id: d.id, size: point.sizes[d.id] ?? d.size }));
  await core.saveState({
    ...core.state,
    disks,
    applied: point.sequence,
    applying: null,
    points: [...core.state.points, point],
  });
  for (const log of logs) await unlinkIfExists(log.path);
  await fsyncDir(join(core.dir, 'incoming'));
  core.counters.pointsApplied++;
  core.counters.logsApplied += logs.length;
  core.counters.bytesApplied += bytes;
  const { sequence, time, consistency, cutId } = point;
  return { sequence, time, consistency, cutId, bytes, records };
}

/**
 * At most the bytes applying `logs` adds to the file system: undo of every range they overwrite
 * (with `undo`), and the image blocks they write, no more than the images' unallocated part.
 */
async function roomFor(core: ReplicaCore, logs: readonly VerifiedLog[], undo: boolean, skipZeroes: boolean): Promise<number> {
  let bytes = 0;
  for (const log of logs) {
    const size = core.diskSize(log.header.diskId);
    let written = 0;
    for (const r of log.index) {
      if (undo) bytes += Math.max(0, Math.min(r.offset + r.length, size) - r.offset);
      if (!r.zero || !skipZeroes) written += r.length;
    }
    const allocated = (await stat(core.diskPath(log.header.diskId))).blocks * 512;
    bytes += Math.min(written, Math.max(0, log.header.diskSize - allocated));
  }
  return bytes;
}

/**
 * The retained points older than the point being applied (at `time`) that the prune after it
 * will drop: every point after the newest one it keeps. They are dropped now instead, handing
 * their undo to the new point as prune would, and every range their undo saved is already the
 * content at that kept point, so the new point's undo skips it (a block overwritten again before
 * the next kept point is saved once). Doing both in the apply's own journal write keeps the
 * skipped ranges from ever being read for a dropped point, even across a crash.
 */
async function foldObsolete(core: ReplicaCore, time: number): Promise<{ points: readonly StoredPoint[]; carry: Record<string, string[]>; saved: Map<string, RangeSet> }> {
  const pts = core.state.points;
  const none = { points: pts, carry: {}, saved: new Map<string, RangeSet>() };
  const keep = selectRetained([...pts, { sequence: Number.MAX_SAFE_INTEGER, time, consistency: 'crash', cutId: '' }], core.state.retention, time);
  for (const seq of core.pins.keys()) keep.add(seq);
  let k = pts.length - 1;
  while (k >= 0 && !keep.has(pts[k].sequence)) k--;
  const obsolete = pts.slice(k + 1);
  // Nothing kept below (no older point to serve), or an obsolete point without undo: fold nothing.
  if (k < 0 || !obsolete.length || obsolete.some((p) => p.undo === null)) return none;
  const carry: Record<string, string[]> = {};
  for (const p of obsolete) for (const [diskId, list] of Object.entries(p.undo!)) (carry[diskId] ??= []).push(...list);
  const saved = new Map<string, RangeSet>();
  for (const [diskId, list] of Object.entries(carry)) {
    const set = new RangeSet();
    for (const name of list) for (const e of (await core.undoFile(name)).entries) set.add(e.offset, e.offset + e.length);
    saved.set(diskId, set);
  }
  return { points: pts.slice(0, k + 1), carry, saved };
}

/**
 * Seals the old content of every range the log overwrites (clipped to the disk's current size),
 * except ranges in `skip`, whose content at the previous kept point another segment holds.
 */
async function captureUndo(core: ReplicaCore, log: VerifiedLog, name: string, skip?: RangeSet): Promise<void> {
  // An encrypted image's undo holds whole units of ciphertext (see image-file.ts).
  const size = imageLength(core.diskSize(log.header.diskId), core.cipher);
  const u = core.cipher?.unit ?? 1;
  const ranges = new RangeSet();
  for (const r of log.index) {
    const start = r.offset - (r.offset % u);
    const end = Math.min(Math.ceil((r.offset + r.length) / u) * u, size);
    if (start >= end) continue;
    if (!skip) ranges.add(start, end);
    else for (const g of skip.gaps(start, end)) ranges.add(g.start, g.end);
  }
  const w = await UndoWriter.create(join(core.dir, 'undo', name));
  const image = await ImageFile.open(core.diskPath(log.header.diskId), 'r', core.cipher);
  try {
    for (const r of ranges.ranges()) {
      for (let at = r.start; at < r.end; at += UNDO_CHUNK) {
        const buf = Buffer.alloc(Math.min(UNDO_CHUNK, r.end - at));
        // Synchronous: thousands of 4 KiB page-cache reads cost more in thread-pool round trips than in reading.
        image.readRaw(buf, at);
        await w.add(at, buf);
      }
    }
    core.counters.undoBytesWritten += await w.finish();
  } catch (e) {
    await w.abort();
    throw e;
  } finally {
    await image.close();
  }
}

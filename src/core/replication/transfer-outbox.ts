// The outbox path every transfer but the streamed ones takes: a cut sealed into logs in the
// relationship's outbox (one folder per sequence), then shipped to the replica oldest first, each
// sequence leaving the outbox once the replica reports it applied.
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeLog } from '../log/log-format.ts';
import { BLOCK_SIZE, type Extent, type LogHeader } from '../types.ts';
import { RetryableError, TerminalError } from '../../model/errors.ts';
import type { ReplicaStatus } from '../../model/replication-api.ts';
import type { CutSource } from './ports.ts';
import { differenceFilter, type DifferenceFilter } from './difference-filter.ts';
import { appCutDue, noteAppCut } from './primary-record.ts';
import { outboxSequences } from './outbox.ts';
import type { TransferContext } from './transfer-context.ts';

export type LogKind = 'delta' | 'full' | 'resync';
export type SourceCut = Awaited<ReturnType<CutSource['cut']>> & { readonly cutId: string };

/**
 * Seals one cut of every disk into the outbox as sequence `seq`. `filter` drops blocks the
 * replica already holds (resync, existing replica). The cut is released once the logs exist: a
 * crash after that loses tracking continuity anyway, which forces a resync.
 */
export async function seal(ctx: TransferContext, seq: number, kind: LogKind, full: boolean, onProgress?: (done: number) => void,
  filter?: (diskId: string, extents: AsyncIterable<Extent>) => AsyncIterable<Extent>): Promise<number> {
  const cut = await cutFor(ctx, kind, full);
  const dir = ctx.outbox(seq);
  let bytes = 0;
  let before = 0;
  try {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    for (const frozen of cut.disks) {
      const extents = frozen.extents((done) => onProgress?.(before + done));
      const summary = await writeLog(
        logHeader(ctx, seq, kind, frozen, cut),
        filter ? filter(frozen.diskId, extents) : extents,
        ctx.keys,
        join(dir, `${frozen.diskId}.hrl`),
      );
      before += frozen.size;
      bytes += summary.dataBytes;
    }
  } catch (e) {
    await cut.abandon();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  ctx.record.sequence = seq;
  await ctx.save();
  await cut.release();
  return bytes;
}

/** A cut of every disk; a delta's is app-consistent when one is due. */
export async function cutFor(ctx: TransferContext, kind: LogKind, full: boolean): Promise<SourceCut> {
  const cutId = randomUUID();
  const time = ctx.clock.now();
  const quiesce = kind === 'delta' && appCutDue(ctx.record, time);
  const cut = await ctx.source.cut({ cutId, time, full, ...(quiesce && { quiesce }) });
  if (quiesce) noteAppCut(ctx.record, time, cut);
  return Object.assign(cut, { cutId: cut.cutId ?? cutId });
}

export function logHeader(ctx: TransferContext, seq: number, kind: LogKind, frozen: { diskId: string; size: number }, cut: SourceCut): LogHeader {
  return {
    relationshipId: ctx.record.id, diskId: frozen.diskId, diskSize: frozen.size, sequence: seq, basePoint: seq - 1, blockSize: BLOCK_SIZE,
    cutTime: cut.time, consistency: cut.consistency ?? 'crash', kind, cutId: cut.cutId,
  };
}

/**
 * Sends every sealed sequence of the outbox the replica does not hold yet, oldest first, then
 * asks it to apply; a sequence leaves the outbox once the replica reports it applied.
 */
export async function ship(ctx: TransferContext, onProgress?: (done: number, total: number) => void, known?: ReplicaStatus): Promise<ReplicaStatus> {
  const r = ctx.record;
  let status = known ?? (await ctx.link.status(r.id));
  const outbox = await outboxSequences(ctx.outbox());
  const received = new Set(Object.values(status.received).flat());
  for (let missing = status.applied + 1; missing < (outbox[0] ?? 0); missing++) {
    if (!received.has(missing)) {
      // A log between the replica's point and our oldest unsent one is gone on both sides.
      throw new TerminalError('broken-chain', `replica of ${r.vm} is at point ${status.applied} but log ${missing} is lost; resynchronization required`);
    }
  }
  for (const seq of outbox) {
    if (seq <= status.applied) {
      await rm(ctx.outbox(seq), { recursive: true, force: true });
      continue;
    }
    const dir = ctx.outbox(seq);
    const files = (await readdir(dir)).filter((f) => f.endsWith('.hrl')).sort();
    for (const f of files) {
      const diskId = f.slice(0, -'.hrl'.length);
      if (status.received[diskId]?.includes(seq)) continue;
      const path = join(dir, f);
      const size = (await stat(path)).size;
      await ctx.link.upload(r.id, seq, diskId, path, onProgress);
      r.bytesShipped += size;
    }
    status = await ctx.link.apply(r.id);
    if (status.applied < seq) {
      // The replica dropped a log it could not verify: it is sent again on the next attempt.
      throw new RetryableError('integrity', `replica of ${r.vm} did not apply sequence ${seq} (applied ${status.applied}); its logs will be re-sent`);
    }
    await rm(dir, { recursive: true, force: true });
  }
  r.applied = status.applied;
  const latest = status.points.at(-1);
  if (latest) r.lastReplicationTime = Date.parse(latest.time);
  return status;
}

/**
 * A filter that keeps only blocks whose keyed checksum differs from the replica's latest point:
 * the multi-level compare (the cut read once, short digests only where blocks differ), or, with
 * a replica that only offers whole-disk 4 KiB digests, a compare against those.
 */
export function replicaDifference(ctx: TransferContext): Promise<DifferenceFilter> {
  return differenceFilter({ id: ctx.record.id, disks: ctx.source.disks, link: ctx.link, macKey: ctx.keys.macKey, log: ctx.log });
}

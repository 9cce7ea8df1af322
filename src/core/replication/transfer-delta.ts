// The delta of one cycle: what the outbox still holds ships first, then the blocks changed since
// the previous cut, streamed to the replica as they are encoded when the link and the bandwidth
// cap allow it, else sealed in the outbox and shipped from there.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { encode } from '../log/log-format.ts';
import { RetryableError } from '../../model/errors.ts';
import type { ReplicaStatus } from '../../model/replication-api.ts';
import { ChunkPipe, LogTee } from './log-stream.ts';
import type { CycleResult } from './primary-record.ts';
import { cutFor, logHeader, seal, ship } from './transfer-outbox.ts';
import type { TransferContext } from './transfer-context.ts';

/**
 * Ships what the outbox holds. A log sealed just before a crash (its record not saved yet) ships
 * here; the next number follows it, so no second, different log ever carries the same sequence.
 */
export async function shipBacklog(ctx: TransferContext): Promise<ReplicaStatus> {
  const shipped = await ship(ctx);
  if (shipped.applied > ctx.record.sequence) ctx.record.sequence = shipped.applied;
  return shipped;
}

/** Cuts and ships the next delta; `shipped` is the replica's status after shipBacklog. */
export async function delta(ctx: TransferContext, shipped: ReplicaStatus): Promise<CycleResult> {
  const r = ctx.record;
  // Continuous mode cuts only when there is something to ship: an idle VM's replica is current.
  if (r.policy.frequency === 'continuous' && r.applied === r.sequence && ctx.source.disks.every((d) => d.pendingBytes() === 0)) {
    r.lastReplicationTime = ctx.clock.now();
    return { action: 'none', applied: r.applied };
  }
  const seq = r.sequence + 1;
  const started = ctx.clock.now();
  let bytes: number;
  let status: ReplicaStatus;
  if (canStreamDelta(ctx)) {
    ({ bytes, status } = await streamDelta(ctx, seq, shipped));
  } else {
    bytes = await seal(ctx, seq, 'delta', false);
    status = await ship(ctx);
  }
  ctx.recordSuccess({ bytes, latencyMs: ctx.clock.now() - started });
  return { action: 'delta', sequence: seq, bytes, applied: status.applied };
}

/**
 * Whether a delta streams (log-stream.ts): the link must take streamed logs, and a bandwidth
 * cap must let the cycle's changes through in about two minutes (one request the replica's
 * server keeps open); below that the delta is sealed in the outbox and sent in paced chunks.
 */
function canStreamDelta(ctx: TransferContext): boolean {
  if (!ctx.link.uploadStream) return false;
  const cap = ctx.record.policy.bandwidth;
  return cap === undefined || cap * 120 >= ctx.source.disks.reduce((n, d) => n + d.pendingBytes(), 0);
}

/**
 * A streamed delta: each disk's log goes to the replica as it is encoded, nothing staged on
 * disk here. The primary keeps the log's bytes (LogTee) only until the replica acknowledged
 * every disk; the cut's copy-before-write data is released after that. When a send fails, the
 * encoding goes on into the outbox and is sealed there as sequence `seq`: the ordinary upload
 * then resumes from the replica's durable offset with the same bytes, now or in the next cycle.
 * A failure to read or encode the cut abandons it (its blocks are dirty again) and seals nothing.
 */
async function streamDelta(ctx: TransferContext, seq: number, status: ReplicaStatus): Promise<{ bytes: number; status: ReplicaStatus }> {
  const r = ctx.record;
  if (Object.values(status.received).some((list) => list.some((n) => n >= seq))) {
    // Left by a stream whose cut was abandoned (this sequence was never sealed): another cut's
    // log of the same sequence must not meet it there.
    status = await ctx.link.discardPending(r.id);
  }
  const cut = await cutFor(ctx, 'delta', false);
  const dir = ctx.outbox(seq);
  const tees: LogTee[] = [];
  /** Disks whose stream the replica acknowledged. */
  const sent: string[] = [];
  let failed: unknown;
  let bytes = 0;
  let logBytes = 0;
  /** Drops what this cycle left on the primary: the tees, their directory, the cut. */
  const drop = async (): Promise<void> => {
    for (const t of tees) await t.discard();
    await rm(dir, { recursive: true, force: true });
    await cut.abandon();
  };
  try {
    // Left by an earlier attempt at this sequence (a tee creates the directory only if it spills).
    await rm(dir, { recursive: true, force: true });
    for (const frozen of cut.disks) {
      const tee = new LogTee(join(dir, `${frozen.diskId}.hrl`));
      tees.push(tee);
      const header = logHeader(ctx, seq, 'delta', frozen, cut);
      const extents = frozen.extents();
      if (failed !== undefined) {
        bytes += (await encode(header, extents, ctx.keys, (c) => tee.append(c))).dataBytes;
        continue;
      }
      const pipe = new ChunkPipe();
      const sending = ctx.link.uploadStream!(r.id, seq, frozen.diskId, pipe.read()).then(() => undefined, (e: unknown) => {
        pipe.close();
        return e ?? new Error('stream failed');
      });
      try {
        const summary = await encode(header, extents, ctx.keys, async (c) => {
          await tee.append(c);
          await pipe.push(c);
        });
        pipe.end();
        bytes += summary.dataBytes;
        logBytes += summary.bytes;
      } catch (e) {
        pipe.end(e);
        await sending;
        throw e;
      }
      failed = await sending;
      if (failed === undefined) sent.push(frozen.diskId);
    }
  } catch (e) {
    await drop();
    if (tees.length > 1 || failed !== undefined) await ctx.link.discardPending(r.id).catch(() => undefined);
    throw e;
  }
  if (failed !== undefined) {
    ctx.log.warn('streamed delta interrupted; its log is sealed in the outbox and resumes from the replica\'s offset', {
      relationship: r.id, sequence: seq, error: (failed as Error).message,
    });
    try {
      for (const t of tees) await t.keep();
    } catch (e) {
      await drop();
      throw e;
    }
    r.sequence = seq;
    await ctx.save();
    await cut.release();
    // Straight on to the upload's in-place retries: what the replica holds (its acknowledged
    // disks, the torn one's durable bytes) is not sent again.
    const received = { ...status.received };
    for (const d of sent) received[d] = [...(received[d] ?? []), seq];
    return { bytes, status: await ship(ctx, undefined, { ...status, received }) };
  }
  for (const t of tees) await t.discard();
  await rm(dir, { recursive: true, force: true });
  r.sequence = seq;
  r.bytesShipped += logBytes;
  await ctx.save();
  await cut.release();
  const applied = await ctx.link.apply(r.id);
  if (applied.applied < seq) {
    // Held by the replica (it acknowledged the logs durably), not applied yet: it applies there
    // once it can (say, room for its undo), and the next cycle's log follows it.
    throw new RetryableError('integrity', `replica of ${r.vm} holds sequence ${seq} but did not apply it (applied ${applied.applied})`);
  }
  r.applied = applied.applied;
  const latest = applied.points.at(-1);
  if (latest) r.lastReplicationTime = Date.parse(latest.time);
  return { bytes, status: applied };
}

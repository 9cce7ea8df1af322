// Resynchronisation: a cut of every block compared by keyed checksums with the replica's latest
// applied point; only differing blocks ship. A compare whose log is already sealed is not run
// again: only its transfer is left.
import { rm } from 'node:fs/promises';
import { outboxSequences } from './outbox.ts';
import type { CycleResult } from './primary-record.ts';
import { replicaDifference, seal, ship } from './transfer-outbox.ts';
import { totalBytes, type TransferContext } from './transfer-context.ts';

/**
 * Logs cut before the resync (in the outbox, or received and not applied) are dropped on both
 * sides, since the compare covers their blocks, and the chain restarts at the applied point: the
 * resync log is `applied + 1`, based on `applied`.
 */
export async function resync(ctx: TransferContext): Promise<CycleResult> {
  const r = ctx.record;
  const total = totalBytes(ctx);
  const current = await ctx.link.status(r.id);
  const seq = current.applied + 1;
  const outbox = await outboxSequences(ctx.outbox());
  let bytes = 0;
  if (r.resync?.sealed === seq && outbox.length === 1 && outbox[0] === seq) {
    // Resumable: the compare already ran and its log is sealed; only the transfer is left (and
    // the upload itself resumes from the replica's durable offset).
    ctx.log.info('resuming an interrupted resynchronization', { relationship: r.id, sequence: seq });
  } else {
    for (const old of outbox) await rm(ctx.outbox(old), { recursive: true, force: true });
    await ctx.link.discardPending(r.id);
    r.resync = { reason: r.resync?.reason ?? 'requested', bytesDone: 0, bytesTotal: total };
    const filter = await replicaDifference(ctx);
    bytes = await seal(ctx, seq, 'resync', true, (done) => (r.resync!.bytesDone = done), filter);
    r.resync.sealed = seq;
    await ctx.save();
  }
  const status = await ship(ctx);
  r.resync = { ...r.resync!, bytesDone: total, bytesTotal: total };
  delete r.resync.sealed;
  ctx.recordSuccess({ bytes, latencyMs: 0 });
  return { action: 'resync', sequence: seq, bytes, applied: status.applied };
}

// The initial copy by network through the outbox, from an existing replica (only the blocks that
// differ ship), and by external media (the cut exported to a folder the replica site imports as
// point 1). A network copy streams instead when the link and the bandwidth cap allow it
// (transfer-initial-stream.ts).
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { TerminalError } from '../../model/errors.ts';
import { exportToMedia } from './initial-copy.ts';
import { outboxSequences } from './outbox.ts';
import type { CycleResult } from './primary-record.ts';
import type { StreamedInitialCopy } from './transfer-initial-stream.ts';
import { canStreamInitial } from './transfer-initial-stream.ts';
import { replicaDifference, seal, ship } from './transfer-outbox.ts';
import { totalBytes, type TransferContext } from './transfer-context.ts';

/**
 * One attempt at the initial copy, resumed from what the outbox and the replica hold. The copy is
 * done once the result's `applied` reaches 1.
 */
export async function initialCopy(ctx: TransferContext, streamed: StreamedInitialCopy): Promise<CycleResult> {
  const r = ctx.record;
  const method = r.initial?.method ?? 'network';
  const total = totalBytes(ctx);
  r.initial = { ...(r.initial ?? { method, bytesDone: 0 }), method, bytesTotal: total };
  const existing = await outboxSequences(ctx.outbox());
  if (method === 'network' && !existing.includes(1) && canStreamInitial(ctx)) return streamed.run();
  let bytes = 0;
  if (!existing.includes(1) && r.applied < 1) {
    const filter = method === 'existing-replica' ? await replicaDifference(ctx) : undefined;
    bytes = await seal(ctx, 1, method === 'existing-replica' ? 'resync' : 'full', true, (done) => (r.initial!.bytesDone = done / 2), filter);
  }
  const status = await ship(ctx, (done, t) => (r.initial!.bytesDone = total / 2 + (total / 2) * (t ? done / t : 1)));
  if (status.applied >= 1) {
    r.initial.bytesDone = total;
    r.replicatingSince = ctx.clock.now();
    ctx.recordSuccess({ bytes, latencyMs: ctx.clock.now() - (r.lastReplicationTime ?? ctx.clock.now()) });
  }
  return { action: 'initial', sequence: 1, bytes, applied: status.applied };
}

/** External media: export the cut to `mediaPath/<id>`; the replica imports it as point 1. */
export async function exportMedia(ctx: TransferContext): Promise<CycleResult> {
  const r = ctx.record;
  const folder = r.policy.initialReplication?.mediaPath;
  if (!folder) throw new TerminalError('invalid-argument', `initial replication of ${r.vm} by external media needs initialReplication.mediaPath`);
  const total = totalBytes(ctx);
  r.initial = { ...r.initial!, bytesTotal: total };
  if (!ctx.source.tracked) throw new TerminalError('invalid-argument', `${r.vm}: external media needs the VM's own disks`);
  await exportToMedia(ctx.source.tracked, join(folder, r.id), {
    cutId: randomUUID(),
    time: ctx.clock.now(),
    relationshipId: r.id,
    macKey: ctx.keys.macKey,
    onProgress: (done) => (r.initial!.bytesDone = done),
  });
  r.sequence = 1;
  r.initial.bytesDone = total;
  return { action: 'export', sequence: 1, bytes: total, applied: r.applied };
}

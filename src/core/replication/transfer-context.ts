// What a transfer (initial copy, delta, resync) needs from its relationship, and nothing more:
// the record it advances, the cut source, the link, the keys, the clock, the logger, the outbox,
// a save of the record and the statistics' count of completed transfers. primary.ts owns the
// state machine and chooses which transfer runs; a transfer never changes the relationship's state.
import type { Clock } from '../../model/clock.ts';
import type { Logger } from '../../model/logger.ts';
import type { RelationshipKeys } from '../types.ts';
import type { PrimaryRecord } from './primary-record.ts';
import type { CutSource, ReplicaLink } from './ports.ts';

export interface TransferContext {
  /** The relationship's record: a transfer advances its progress, sequence, applied point and bytes shipped. */
  readonly record: PrimaryRecord;
  readonly source: CutSource;
  /** The link to the Replica server, under the relationship's bandwidth cap. */
  readonly link: ReplicaLink;
  readonly keys: RelationshipKeys;
  readonly clock: Clock;
  readonly log: Logger;
  /** The relationship's outbox folder, or sequence `seq`'s folder in it. */
  outbox(seq?: number): string;
  /** Persists the record (a sealed log is on record before its cut is released). */
  save(): Promise<void>;
  /** Counts a completed transfer in the relationship's statistics. */
  recordSuccess(cycle: { readonly bytes: number; readonly latencyMs: number }): void;
}

/** Bytes of every disk the source cuts. */
export function totalBytes(ctx: Pick<TransferContext, 'source'>): number {
  return ctx.source.disks.reduce((n, d) => n + d.size, 0);
}

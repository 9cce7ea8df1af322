// The streamed initial copy (initial-stream.ts): one full cut, each disk sent as segments as they
// are encoded, the replica writing each as it arrives and checkpointing it once durable. The cut
// is held here between attempts, so a failed attempt resumes where the replica's checkpoint stands.
import { randomUUID } from 'node:crypto';
import { encode } from '../log/log-format.ts';
import { BLOCK_SIZE } from '../types.ts';
import { RetryableError, TerminalError } from '../../model/errors.ts';
import type { ReplicaStatus } from '../../model/replication-api.ts';
import { ExtentCursor, SEGMENT_BYTES, SegmentBuffer, segmentCount, segmentRange } from './initial-stream.ts';
import type { CycleResult } from './primary-record.ts';
import type { CutSource } from './ports.ts';
import { totalBytes, type TransferContext } from './transfer-context.ts';

/**
 * Whether the initial copy streams: the link must take segments, and a bandwidth cap must let
 * one segment through in about two minutes (a request the replica's server keeps open); below
 * that the copy goes through the outbox in paced chunks.
 */
export function canStreamInitial(ctx: TransferContext): boolean {
  if (!ctx.link.initialSegment) return false;
  const cap = ctx.record.policy.bandwidth;
  return cap === undefined || cap * 120 >= SEGMENT_BYTES;
}

/** One relationship's streamed initial copy, kept across attempts until it completes or is dropped. */
export class StreamedInitialCopy {
  readonly #ctx: TransferContext;
  /** The copy under way (its cut held until the replica has every segment). */
  #stream: InitialStream | undefined;

  constructor(ctx: TransferContext) {
    this.#ctx = ctx;
  }

  /** True while a copy holds its cut. */
  get active(): boolean {
    return this.#stream !== undefined;
  }

  /**
   * One attempt: sends the segments the replica does not hold yet, then asks it to make the copy
   * point 1. After a failure the copy resumes where the replica's checkpoint stands, from the
   * same cut (the segment in flight is kept whole and sent again). After a restart of this
   * process the cut is gone: a new one starts the copy again from segment 0.
   */
  async run(): Promise<CycleResult> {
    const ctx = this.#ctx;
    const r = ctx.record;
    const total = totalBytes(ctx);
    let status = await ctx.link.status(r.id);
    if (status.applied < 1) {
      let s = this.#stream;
      if (s && (status.initial?.cutId !== s.cutId || behind(s, status))) {
        ctx.log.warn('the replica no longer holds the initial copy in progress; it starts again', { relationship: r.id });
        await this.drop(false);
        s = undefined;
      }
      s ??= await this.#open();
      let done = 0;
      for (const frozen of s.cut.disks) {
        const count = segmentCount(frozen.size);
        for (;;) {
          const have = status.initial?.cutId === s.cutId ? (status.initial.segments[frozen.diskId] ?? 0) : 0;
          r.initial!.bytesDone = done + Math.min(frozen.size, have * SEGMENT_BYTES);
          if (have >= count) break;
          if (s.pending?.diskId !== frozen.diskId || s.pending.index !== have) {
            if (s.ahead?.diskId === frozen.diskId && s.ahead.index === have) {
              s.pending = s.ahead;
              s.ahead = undefined;
            } else {
              if ((s.produced.get(frozen.diskId) ?? 0) !== have) throw new TerminalError('invalid-state', `initial copy of ${r.vm}: the replica asks for segment ${have} of ${frozen.diskId}, this copy produced ${s.produced.get(frozen.diskId) ?? 0}`);
              s.pending = { diskId: frozen.diskId, index: have, buffer: this.#encodeSegment(s, frozen.diskId, frozen.size, have) };
              s.produced.set(frozen.diskId, have + 1);
            }
          }
          const buffer = s.pending.buffer;
          // The next segment encodes once this one is encoded, while this one travels and the
          // replica makes it durable (the cut is read in order, so it cannot start sooner).
          if (!s.ahead && have + 1 < count) {
            const { diskId, size } = frozen;
            void buffer.finished.then(() => {
              if (this.#stream !== s || !buffer.complete || s.ahead || s.produced.get(diskId) !== have + 1) return;
              s.ahead = { diskId, index: have + 1, buffer: this.#encodeSegment(s, diskId, size, have + 1) };
              s.produced.set(diskId, have + 2);
            });
          }
          try {
            status = await ctx.link.initialSegment!(r.id, frozen.diskId, have, buffer.read());
          } catch (e) {
            // The segment stays whole for the next attempt, unless reading the cut itself failed.
            await buffer.finished;
            if (!buffer.complete) await this.drop(false);
            throw e;
          }
          r.bytesShipped += buffer.bytes;
          s.pending = undefined;
        }
        done += frozen.size;
      }
      status = await ctx.link.apply(r.id);
    }
    if (status.applied < 1) throw new RetryableError('integrity', `replica of ${r.vm} did not make the initial copy a point (applied ${status.applied}); it is sent again`);
    r.sequence = Math.max(r.sequence, 1);
    r.applied = status.applied;
    const latest = status.points.at(-1);
    if (latest) r.lastReplicationTime = Date.parse(latest.time);
    const bytes = this.#stream?.dataBytes ?? 0;
    await this.drop(true);
    r.initial = { ...r.initial!, bytesDone: total, bytesTotal: total };
    r.replicatingSince = ctx.clock.now();
    ctx.recordSuccess({ bytes, latencyMs: ctx.clock.now() - (r.lastReplicationTime ?? ctx.clock.now()) });
    return { action: 'initial', sequence: 1, bytes, applied: status.applied };
  }

  /** Ends the copy: its cut released (the replica has it all) or abandoned (blocks pending again). */
  async drop(release: boolean): Promise<void> {
    const s = this.#stream;
    if (!s) return;
    this.#stream = undefined;
    await s.pending?.buffer.finished;
    await s.ahead?.buffer.finished;
    for (const c of s.cursors.values()) await c.close().catch(() => undefined);
    if (release) await s.cut.release();
    else await s.cut.abandon();
  }

  async #open(): Promise<InitialStream> {
    const cutId = randomUUID();
    const cut = await this.#ctx.source.cut({ cutId, time: this.#ctx.clock.now(), full: true });
    const s: InitialStream = {
      cut,
      cutId: cut.cutId ?? cutId,
      cursors: new Map(cut.disks.map((d) => [d.diskId, new ExtentCursor(d.extents())])),
      produced: new Map(),
      dataBytes: 0,
    };
    this.#stream = s;
    return s;
  }

  /** Encodes segment `index` of a disk into a buffer, in the background. */
  #encodeSegment(s: InitialStream, diskId: string, size: number, index: number): SegmentBuffer {
    const buffer = new SegmentBuffer();
    const { end } = segmentRange(index, size);
    const header = {
      relationshipId: this.#ctx.record.id, diskId, diskSize: size, sequence: 1, basePoint: 0, blockSize: BLOCK_SIZE,
      cutTime: s.cut.time, consistency: s.cut.consistency ?? 'crash', kind: 'full', cutId: s.cutId,
    } as const;
    encode(header, s.cursors.get(diskId)!.take(end), this.#ctx.keys, async (c) => buffer.push(c)).then(
      (summary) => {
        s.dataBytes += summary.dataBytes;
        buffer.end();
      },
      (e) => buffer.end(e),
    );
    return buffer;
  }
}

/** The replica holds fewer segments of some disk than were acknowledged to this copy. */
function behind(s: InitialStream, status: ReplicaStatus): boolean {
  return s.cut.disks.some((d) => {
    const acked = (s.produced.get(d.diskId) ?? 0) - (s.pending?.diskId === d.diskId ? 1 : 0) - (s.ahead?.diskId === d.diskId ? 1 : 0);
    return (status.initial?.segments[d.diskId] ?? 0) < acked;
  });
}

interface InitialStream {
  readonly cut: Awaited<ReturnType<CutSource['cut']>>;
  readonly cutId: string;
  /** Each disk's extents of the cut, read once, segment by segment. */
  readonly cursors: Map<string, ExtentCursor>;
  /** Per disk: segments encoded so far. */
  readonly produced: Map<string, number>;
  /** The segment being sent, until the replica acknowledges it. */
  pending?: { diskId: string; index: number; buffer: SegmentBuffer };
  /** The next segment of the same disk, encoding (or encoded) while `pending` travels. */
  ahead?: { diskId: string; index: number; buffer: SegmentBuffer };
  dataBytes: number;
}

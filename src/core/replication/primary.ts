// The primary side of one replication relationship: cuts the VM's tracked disks at the policy's
// frequency, seals each cut into logs in the outbox and ships them to the Replica server, which
// acknowledges a log once it is durable and reports what it applied. Initial replication (network,
// external media, existing replica) and resynchronisation are cuts of every block, the last two
// shipping only blocks whose keyed checksums differ from the replica's.
import { AsyncMutex } from '../async-mutex.ts';
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { exportToMedia } from './initial-copy.ts';
import { encode, writeLog } from '../log/log-format.ts';
import { ExtentCursor, SEGMENT_BYTES, SegmentBuffer, segmentCount, segmentRange } from './initial-stream.ts';
import { transition, type ReplicationEvent, type State } from './replication-state.ts';
import { RetryState } from './retry.ts';
import { ReplicationStatistics } from './statistics.ts';
import { BLOCK_SIZE, type Extent, type LogHeader, type RelationshipKeys } from '../types.ts';
import type { Clock } from '../../model/clock.ts';
import { RetryableError, TerminalError } from '../../model/errors.ts';
import type { ResolvedPolicySpec } from '../../model/desired.ts';
import type { RelationshipView, ReplicaStatus } from '../../model/replication-api.ts';
import type { Logger } from '../../model/logger.ts';
import { writeJsonAtomic } from '../atomic-file.ts';
import type { CutSource, ReplicaLink } from './ports.ts';
import { ChunkPipe, LogTee } from './log-stream.ts';
import { differenceFilter, type DifferenceFilter } from './difference-filter.ts';
import { appCutDue, frequencyMs, healthPeriodMs, inWindow, noteAppCut, retentionOf, type CycleResult, type PrimaryRecord } from './primary-record.ts';
import { primaryView } from './primary-view.ts';
import { outboxSequences } from './outbox.ts';
import { BandwidthCap, throttledLink } from './throttle.ts';

type SourceCut = Awaited<ReturnType<CutSource['cut']>>;

export class PrimaryReplication {
  readonly dir: string;
  record: PrimaryRecord;
  readonly #keys: RelationshipKeys;
  readonly source: CutSource;
  readonly #link: ReplicaLink;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #stats: ReplicationStatistics;
  readonly #retry: RetryState;
  readonly #busy = new AsyncMutex();
  /** The policy's bandwidth cap on what this relationship sends (its link may be shared). */
  readonly bandwidth: BandwidthCap;
  /** A streamed initial copy under way (its cut held until the replica has every segment). */
  #stream: InitialStream | undefined;

  constructor(opts: {
    dir: string;
    record: PrimaryRecord;
    keys: RelationshipKeys;
    source: CutSource;
    link: ReplicaLink;
    clock: Clock;
    log: Logger;
  }) {
    this.dir = opts.dir;
    this.record = opts.record;
    this.#keys = opts.keys;
    this.source = opts.source;
    this.bandwidth = new BandwidthCap(opts.record.policy.bandwidth, opts.clock);
    this.#link = throttledLink(opts.link, () => this.bandwidth.bucket());
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#stats = new ReplicationStatistics(opts.clock, opts.record.statistics);
    this.#retry = new RetryState(opts.clock, opts.record.retry);
  }

  get id(): string {
    return this.record.id;
  }
  get state(): State {
    return this.record.state;
  }
  get frequencyMs(): number {
    return frequencyMs(this.record.policy);
  }
  get nextRetryAt(): number | undefined {
    return this.#retry.nextAttemptAt;
  }
  get retryStatus(): RetryState['status'] {
    return this.#retry.status;
  }

  readonly #saves = new AsyncMutex();

  /** Runs `fn` after every earlier operation on this relationship: one operation at a time. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.#busy.run(fn);
  }

  /** Persists the record; saves run one after another, each writing the record as it is then. */
  save(): Promise<void> {
    const write = async (): Promise<void> => {
      this.record.statistics = this.#stats.toJSON();
      this.record.retry = this.#retry.toJSON();
      await writeJsonAtomic(join(this.dir, 'state.json'), this.record);
    };
    return this.#saves.run(write);
  }

  async #apply(event: ReplicationEvent): Promise<void> {
    this.record.state = transition(this.record.state, event);
    this.#stats.setState(this.record.state);
    await this.save();
  }

  /** The tracker lost continuity (the primary stopped without a clean cut): the replica may miss changes. */
  async markContinuityLost(reason: string): Promise<void> {
    if (['Replicating', 'Suspended', 'InitialReplicationInProgress', 'WaitingForInitialReplicationImport', 'Resynchronizing'].includes(this.record.state)) {
      this.#log.warn('tracking continuity lost: resynchronization required', { relationship: this.id, reason });
      this.record.resync = { bytesDone: 0, bytesTotal: 0, reason };
      await this.#apply('trackerLost');
    }
  }

  /** StartReplication: begins the initial copy now or at the policy's startAt. */
  startInitial(): Promise<CycleResult> {
    return this.#serial(async () => {
      if (this.record.state !== 'ReadyForInitialReplication') {
        throw new TerminalError('invalid-state', `cannot start initial replication of ${this.record.vm} while ${this.record.state}`);
      }
      const ir = this.record.policy.initialReplication;
      const startAt = ir.startAt && ir.startAt !== 'immediately' ? Date.parse(ir.startAt) : undefined;
      this.record.initial = { method: ir.method, bytesDone: 0, bytesTotal: this.#totalBytes(), ...(startAt && { startAt }) };
      await this.save();
      return this.#cycle(false);
    });
  }

  /** One replication cycle: whatever the state calls for. `force` ignores the resync window and startAt. */
  cycle(opts: { force?: boolean } = {}): Promise<CycleResult> {
    return this.#serial(() => this.#cycle(opts.force ?? false));
  }

  async #cycle(force: boolean): Promise<CycleResult> {
    try {
      const result = await this.#step(force);
      if (result.action !== 'none' && result.action !== 'waiting') this.#retry.success();
      await this.save();
      return result;
    } catch (e) {
      await this.#failed(e);
      throw e;
    }
  }

  async #failed(e: unknown): Promise<void> {
    const decision = this.#retry.failure(e);
    this.#stats.recordError();
    this.#stats.recordMissed();
    // retry.ts decides (the error's type, and whether an operator must reset first); this only acts on it.
    if (!decision.retry) {
      const err = this.#retry.lastError!;
      this.record.terminalError = { code: err.code ?? 'unknown', message: err.message };
      if (this.record.state !== 'Critical') this.record.state = transition(this.record.state, 'terminalError');
      this.#log.error('replication stopped: an operator must act', { relationship: this.id, error: err.message, reason: decision.reason });
    } else {
      this.#log.warn('replication cycle failed; will retry', { relationship: this.id, error: (e as Error).message, nextAttemptAt: this.#retry.nextAttemptAt });
    }
    await this.save();
  }

  async #step(force: boolean): Promise<CycleResult> {
    const r = this.record;
    // A streamed initial copy's cut is only kept while that copy is what the relationship does.
    if (this.#stream && r.state !== 'InitialReplicationInProgress') await this.#dropStream(false);
    switch (r.state) {
      case 'ReadyForInitialReplication': {
        if (!r.initial) return { action: 'none', applied: r.applied };
        if (r.initial.startAt && r.initial.startAt > this.#clock.now() && !force) return { action: 'waiting', applied: r.applied };
        if (r.initial.method === 'external-media') return this.#exportMedia();
        await this.#apply('startInitial');
        return this.#initial();
      }
      case 'Disabled':
      case 'Suspended':
      case 'Critical':
      case 'PreparedForPlannedFailover':
      case 'FailoverWaitingCompletion':
      case 'FailedOver':
        return { action: 'none', applied: r.applied };
      case 'InitialReplicationInProgress':
        return this.#initial();
      case 'WaitingForInitialReplicationImport': {
        const s = await this.#link.status(r.id);
        if (s.applied >= 1) {
          r.applied = s.applied;
          r.lastReplicationTime = Date.parse(s.points.at(-1)?.time ?? new Date(this.#clock.now()).toISOString());
          r.replicatingSince = this.#clock.now();
          await this.#apply('imported');
          return this.#delta();
        }
        return { action: 'waiting', applied: r.applied };
      }
      case 'ResynchronizationRequired': {
        if (!this.#resyncAllowed(force)) return { action: 'waiting', applied: r.applied };
        await this.#apply('resync');
        return this.#resync();
      }
      case 'Resynchronizing':
        return this.#resync();
      case 'Replicating':
        return this.#delta();
    }
  }

  /** A pending resync runs when forced (an operator), or automatically inside the policy's window. */
  #resyncAllowed(force: boolean): boolean {
    const rs = this.record.policy.resync;
    return force || (rs.automatic && inWindow(rs.window, this.#clock.now()));
  }

  #totalBytes(): number {
    return this.source.disks.reduce((n, d) => n + d.size, 0);
  }

  #outbox(seq?: number): string {
    return seq === undefined ? join(this.dir, 'outbox') : join(this.dir, 'outbox', String(seq).padStart(12, '0'));
  }

  /**
   * Seals one cut of every disk into the outbox as sequence `seq`. `filter` drops blocks the
   * replica already holds (resync, existing replica). The cut is released once the logs exist: a
   * crash after that loses tracking continuity anyway, which forces a resync.
   */
  async #seal(seq: number, kind: 'delta' | 'full' | 'resync', full: boolean, onProgress?: (done: number) => void,
    filter?: (diskId: string, extents: AsyncIterable<Extent>) => AsyncIterable<Extent>): Promise<number> {
    const cut = await this.#cut(kind, full);
    const dir = this.#outbox(seq);
    let bytes = 0;
    let before = 0;
    try {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      for (const frozen of cut.disks) {
        const extents = frozen.extents((done) => onProgress?.(before + done));
        const summary = await writeLog(
          this.#header(seq, kind, frozen, cut),
          filter ? filter(frozen.diskId, extents) : extents,
          this.#keys,
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
    this.record.sequence = seq;
    await this.save();
    await cut.release();
    return bytes;
  }

  /** A cut of every disk; a delta's is app-consistent when one is due. */
  async #cut(kind: 'delta' | 'full' | 'resync', full: boolean): Promise<SourceCut & { readonly cutId: string }> {
    const cutId = randomUUID();
    const time = this.#clock.now();
    const quiesce = kind === 'delta' && appCutDue(this.record, time);
    const cut = await this.source.cut({ cutId, time, full, ...(quiesce && { quiesce }) });
    if (quiesce) noteAppCut(this.record, time, cut);
    return Object.assign(cut, { cutId: cut.cutId ?? cutId });
  }

  #header(seq: number, kind: 'delta' | 'full' | 'resync', frozen: { diskId: string; size: number }, cut: SourceCut & { readonly cutId: string }): LogHeader {
    return {
      relationshipId: this.id, diskId: frozen.diskId, diskSize: frozen.size, sequence: seq, basePoint: seq - 1, blockSize: BLOCK_SIZE,
      cutTime: cut.time, consistency: cut.consistency ?? 'crash', kind, cutId: cut.cutId,
    };
  }

  /**
   * Sends every sealed sequence of the outbox the replica does not hold yet, oldest first, then
   * asks it to apply; a sequence leaves the outbox once the replica reports it applied.
   */
  async #ship(onProgress?: (done: number, total: number) => void, known?: ReplicaStatus): Promise<ReplicaStatus> {
    let status = known ?? (await this.#link.status(this.id));
    const outbox = await outboxSequences(this.#outbox());
    const received = new Set(Object.values(status.received).flat());
    for (let missing = status.applied + 1; missing < (outbox[0] ?? 0); missing++) {
      if (!received.has(missing)) {
        // A log between the replica's point and our oldest unsent one is gone on both sides.
        throw new TerminalError('broken-chain', `replica of ${this.record.vm} is at point ${status.applied} but log ${missing} is lost; resynchronization required`);
      }
    }
    for (const seq of outbox) {
      if (seq <= status.applied) {
        await rm(this.#outbox(seq), { recursive: true, force: true });
        continue;
      }
      const dir = this.#outbox(seq);
      const files = (await readdir(dir)).filter((f) => f.endsWith('.hrl')).sort();
      for (const f of files) {
        const diskId = f.slice(0, -'.hrl'.length);
        if (status.received[diskId]?.includes(seq)) continue;
        const path = join(dir, f);
        const size = (await stat(path)).size;
        await this.#link.upload(this.id, seq, diskId, path, onProgress);
        this.record.bytesShipped += size;
      }
      status = await this.#link.apply(this.id);
      if (status.applied < seq) {
        // The replica dropped a log it could not verify: it is sent again on the next attempt.
        throw new RetryableError('integrity', `replica of ${this.record.vm} did not apply sequence ${seq} (applied ${status.applied}); its logs will be re-sent`);
      }
      await rm(dir, { recursive: true, force: true });
    }
    this.record.applied = status.applied;
    const latest = status.points.at(-1);
    if (latest) this.record.lastReplicationTime = Date.parse(latest.time);
    return status;
  }

  /** External media: export the cut to `mediaPath/<id>`; the replica imports it as point 1. */
  async #exportMedia(): Promise<CycleResult> {
    const r = this.record;
    const folder = r.policy.initialReplication?.mediaPath;
    if (!folder) throw new TerminalError('invalid-argument', `initial replication of ${r.vm} by external media needs initialReplication.mediaPath`);
    const total = this.#totalBytes();
    r.initial = { ...r.initial!, bytesTotal: total };
    if (!this.source.tracked) throw new TerminalError('invalid-argument', `${r.vm}: external media needs the VM's own disks`);
    await exportToMedia(this.source.tracked, join(folder, r.id), {
      cutId: randomUUID(),
      time: this.#clock.now(),
      relationshipId: r.id,
      macKey: this.#keys.macKey,
      onProgress: (done) => (r.initial!.bytesDone = done),
    });
    r.sequence = 1;
    r.initial.bytesDone = total;
    await this.#apply('waitImport');
    return { action: 'export', sequence: 1, bytes: total, applied: r.applied };
  }

  async #initial(): Promise<CycleResult> {
    const r = this.record;
    const method = r.initial?.method ?? 'network';
    const total = this.#totalBytes();
    r.initial = { ...(r.initial ?? { method, bytesDone: 0 }), method, bytesTotal: total };
    const existing = await outboxSequences(this.#outbox());
    if (method === 'network' && !existing.includes(1) && this.#canStream()) return this.#streamInitial();
    let bytes = 0;
    if (!existing.includes(1) && r.applied < 1) {
      const filter = method === 'existing-replica' ? await this.#differenceFilter() : undefined;
      bytes = await this.#seal(1, method === 'existing-replica' ? 'resync' : 'full', true, (done) => (r.initial!.bytesDone = done / 2), filter);
    }
    const status = await this.#ship((done, t) => (r.initial!.bytesDone = total / 2 + (total / 2) * (t ? done / t : 1)));
    if (status.applied >= 1) {
      r.initial.bytesDone = total;
      r.replicatingSince = this.#clock.now();
      this.#stats.recordSuccess({ bytes, latencyMs: this.#clock.now() - (r.lastReplicationTime ?? this.#clock.now()) });
      await this.#apply('initialDone');
    }
    return { action: 'initial', sequence: 1, bytes, applied: status.applied };
  }

  /**
   * Whether the initial copy streams (core/replication/initial-stream.ts): the link must take segments, and a
   * bandwidth cap must let one segment through in about two minutes (a request the replica's
   * server keeps open); below that the copy goes through the outbox in paced chunks.
   */
  #canStream(): boolean {
    if (!this.#link.initialSegment) return false;
    const cap = this.record.policy.bandwidth;
    return cap === undefined || cap * 120 >= SEGMENT_BYTES;
  }

  /**
   * The streamed initial copy: one full cut, each disk sent as segments as they are encoded, the
   * replica writing each as it arrives and checkpointing it once durable. After a failure the
   * copy resumes where the replica's checkpoint stands, from the same cut (the segment in flight
   * is kept whole and sent again). After a restart of this process the cut is gone: a new one
   * starts the copy again from segment 0.
   */
  async #streamInitial(): Promise<CycleResult> {
    const r = this.record;
    const total = this.#totalBytes();
    let status = await this.#link.status(this.id);
    if (status.applied < 1) {
      let s = this.#stream;
      if (s && (status.initial?.cutId !== s.cutId || this.#behind(s, status))) {
        this.#log.warn('the replica no longer holds the initial copy in progress; it starts again', { relationship: this.id });
        await this.#dropStream(false);
        s = undefined;
      }
      s ??= await this.#openStream();
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
            status = await this.#link.initialSegment!(this.id, frozen.diskId, have, buffer.read());
          } catch (e) {
            // The segment stays whole for the next attempt, unless reading the cut itself failed.
            await buffer.finished;
            if (!buffer.complete) await this.#dropStream(false);
            throw e;
          }
          r.bytesShipped += buffer.bytes;
          s.pending = undefined;
        }
        done += frozen.size;
      }
      status = await this.#link.apply(this.id);
    }
    if (status.applied < 1) throw new RetryableError('integrity', `replica of ${r.vm} did not make the initial copy a point (applied ${status.applied}); it is sent again`);
    r.sequence = Math.max(r.sequence, 1);
    r.applied = status.applied;
    const latest = status.points.at(-1);
    if (latest) r.lastReplicationTime = Date.parse(latest.time);
    const bytes = this.#stream?.dataBytes ?? 0;
    await this.#dropStream(true);
    r.initial = { ...r.initial!, bytesDone: total, bytesTotal: total };
    r.replicatingSince = this.#clock.now();
    this.#stats.recordSuccess({ bytes, latencyMs: this.#clock.now() - (r.lastReplicationTime ?? this.#clock.now()) });
    await this.#apply('initialDone');
    return { action: 'initial', sequence: 1, bytes, applied: status.applied };
  }

  /** The replica holds fewer segments of some disk than were acknowledged to this copy. */
  #behind(s: InitialStream, status: ReplicaStatus): boolean {
    return s.cut.disks.some((d) => {
      const acked = (s.produced.get(d.diskId) ?? 0) - (s.pending?.diskId === d.diskId ? 1 : 0) - (s.ahead?.diskId === d.diskId ? 1 : 0);
      return (status.initial?.segments[d.diskId] ?? 0) < acked;
    });
  }

  async #openStream(): Promise<InitialStream> {
    const cutId = randomUUID();
    const cut = await this.source.cut({ cutId, time: this.#clock.now(), full: true });
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
      relationshipId: this.id, diskId, diskSize: size, sequence: 1, basePoint: 0, blockSize: BLOCK_SIZE,
      cutTime: s.cut.time, consistency: s.cut.consistency ?? 'crash', kind: 'full', cutId: s.cutId,
    } as const;
    encode(header, s.cursors.get(diskId)!.take(end), this.#keys, async (c) => buffer.push(c)).then(
      (summary) => {
        s.dataBytes += summary.dataBytes;
        buffer.end();
      },
      (e) => buffer.end(e),
    );
    return buffer;
  }

  /** Ends a streamed copy: its cut released (the replica has it all) or abandoned (blocks pending again). */
  async #dropStream(release: boolean): Promise<void> {
    const s = this.#stream;
    if (!s) return;
    this.#stream = undefined;
    await s.pending?.buffer.finished;
    await s.ahead?.buffer.finished;
    for (const c of s.cursors.values()) await c.close().catch(() => undefined);
    if (release) await s.cut.release();
    else await s.cut.abandon();
  }

  /**
   * A filter that keeps only blocks whose keyed checksum differs from the replica's latest point:
   * the multi-level compare (the cut read once, short digests only where blocks differ), or, with
   * a replica that only offers whole-disk 4 KiB digests, a compare against those.
   */
  #differenceFilter(): Promise<DifferenceFilter> {
    return differenceFilter({ id: this.id, disks: this.source.disks, link: this.#link, macKey: this.#keys.macKey, log: this.#log });
  }

  async #delta(): Promise<CycleResult> {
    const r = this.record;
    // A log sealed just before a crash (its record not saved yet) ships here; the next number
    // follows it, so no second, different log ever carries the same sequence.
    const shipped = await this.#ship();
    if (shipped.applied > r.sequence) r.sequence = shipped.applied;
    const threshold = r.policy.resync.thresholdPercent / 100;
    if (this.source.disks.some((d) => d.pendingBytes() > threshold * d.size)) {
      r.resync = { bytesDone: 0, bytesTotal: 0, reason: `pending changes exceed ${threshold * 100}% of a disk` };
      await this.#apply('thresholdExceeded');
      // Inside the automatic window the resync runs in this cycle, not one interval later.
      if (!this.#resyncAllowed(false)) return { action: 'none', applied: r.applied };
      await this.#apply('resync');
      return this.#resync();
    }
    // Continuous mode cuts only when there is something to ship: an idle VM's replica is current.
    if (r.policy.frequency === 'continuous' && r.applied === r.sequence && this.source.disks.every((d) => d.pendingBytes() === 0)) {
      r.lastReplicationTime = this.#clock.now();
      return { action: 'none', applied: r.applied };
    }
    const seq = r.sequence + 1;
    const started = this.#clock.now();
    let bytes: number;
    let status: ReplicaStatus;
    if (this.#canStreamDelta()) {
      ({ bytes, status } = await this.#streamDelta(seq, shipped));
    } else {
      bytes = await this.#seal(seq, 'delta', false);
      status = await this.#ship();
    }
    this.#stats.recordSuccess({ bytes, latencyMs: this.#clock.now() - started });
    return { action: 'delta', sequence: seq, bytes, applied: status.applied };
  }

  /**
   * Whether a delta streams (log-stream.ts): the link must take streamed logs, and a bandwidth
   * cap must let the cycle's changes through in about two minutes (one request the replica's
   * server keeps open); below that the delta is sealed in the outbox and sent in paced chunks.
   */
  #canStreamDelta(): boolean {
    if (!this.#link.uploadStream) return false;
    const cap = this.record.policy.bandwidth;
    return cap === undefined || cap * 120 >= this.source.disks.reduce((n, d) => n + d.pendingBytes(), 0);
  }

  /**
   * A streamed delta: each disk's log goes to the replica as it is encoded, nothing staged on
   * disk here. The primary keeps the log's bytes (LogTee) only until the replica acknowledged
   * every disk; the cut's copy-before-write data is released after that. When a send fails, the
   * encoding goes on into the outbox and is sealed there as sequence `seq`: the ordinary upload
   * then resumes from the replica's durable offset with the same bytes, now or in the next cycle.
   * A failure to read or encode the cut abandons it (its blocks are dirty again) and seals nothing.
   */
  async #streamDelta(seq: number, status: ReplicaStatus): Promise<{ bytes: number; status: ReplicaStatus }> {
    const r = this.record;
    if (Object.values(status.received).some((list) => list.some((n) => n >= seq))) {
      // Left by a stream whose cut was abandoned (this sequence was never sealed): another cut's
      // log of the same sequence must not meet it there.
      status = await this.#link.discardPending(this.id);
    }
    const cut = await this.#cut('delta', false);
    const dir = this.#outbox(seq);
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
        const header = this.#header(seq, 'delta', frozen, cut);
        const extents = frozen.extents();
        if (failed !== undefined) {
          bytes += (await encode(header, extents, this.#keys, (c) => tee.append(c))).dataBytes;
          continue;
        }
        const pipe = new ChunkPipe();
        const sending = this.#link.uploadStream!(this.id, seq, frozen.diskId, pipe.read()).then(() => undefined, (e: unknown) => {
          pipe.close();
          return e ?? new Error('stream failed');
        });
        try {
          const summary = await encode(header, extents, this.#keys, async (c) => {
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
      if (tees.length > 1 || failed !== undefined) await this.#link.discardPending(this.id).catch(() => undefined);
      throw e;
    }
    if (failed !== undefined) {
      this.#log.warn('streamed delta interrupted; its log is sealed in the outbox and resumes from the replica\'s offset', {
        relationship: this.id, sequence: seq, error: (failed as Error).message,
      });
      try {
        for (const t of tees) await t.keep();
      } catch (e) {
        await drop();
        throw e;
      }
      r.sequence = seq;
      await this.save();
      await cut.release();
      // Straight on to the upload's in-place retries: what the replica holds (its acknowledged
      // disks, the torn one's durable bytes) is not sent again.
      const received = { ...status.received };
      for (const d of sent) received[d] = [...(received[d] ?? []), seq];
      return { bytes, status: await this.#ship(undefined, { ...status, received }) };
    }
    for (const t of tees) await t.discard();
    await rm(dir, { recursive: true, force: true });
    r.sequence = seq;
    r.bytesShipped += logBytes;
    await this.save();
    await cut.release();
    const applied = await this.#link.apply(this.id);
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

  /**
   * Resynchronisation: a cut of every block compared by keyed checksums with the replica's latest
   * applied point; only differing blocks ship. Logs cut before it (in the outbox, or received and
   * not applied) are dropped on both sides, since the compare covers their blocks, and the chain
   * restarts at the applied point: the resync log is `applied + 1`, based on `applied`.
   */
  async #resync(): Promise<CycleResult> {
    const r = this.record;
    const total = this.#totalBytes();
    const current = await this.#link.status(this.id);
    const seq = current.applied + 1;
    const outbox = await outboxSequences(this.#outbox());
    let bytes = 0;
    if (r.resync?.sealed === seq && outbox.length === 1 && outbox[0] === seq) {
      // Resumable: the compare already ran and its log is sealed; only the transfer is left (and
      // the upload itself resumes from the replica's durable offset).
      this.#log.info('resuming an interrupted resynchronization', { relationship: this.id, sequence: seq });
    } else {
      for (const old of outbox) await rm(this.#outbox(old), { recursive: true, force: true });
      await this.#link.discardPending(this.id);
      r.resync = { reason: r.resync?.reason ?? 'requested', bytesDone: 0, bytesTotal: total };
      const filter = await this.#differenceFilter();
      bytes = await this.#seal(seq, 'resync', true, (done) => (r.resync!.bytesDone = done), filter);
      r.resync.sealed = seq;
      await this.save();
    }
    const status = await this.#ship();
    r.resync = { ...r.resync!, bytesDone: total, bytesTotal: total };
    delete r.resync.sealed;
    this.#stats.recordSuccess({ bytes, latencyMs: 0 });
    await this.#apply('resyncDone');
    return { action: 'resync', sequence: seq, bytes, applied: status.applied };
  }

  /**
   * Primary side of a planned failover: the VM is off, so one last delta brings the replica to
   * exactly the primary's disks; nothing acknowledged before shutdown can be lost.
   */
  preparePlannedFailover(): Promise<{ sequence: number; state: State }> {
    return this.#serial(async () => {
      if (this.record.state !== 'Replicating') {
        throw new TerminalError('invalid-state', `cannot prepare a planned failover of ${this.record.vm} while ${this.record.state}`);
      }
      await this.#delta();
      if (this.record.state !== 'Replicating' || this.record.applied !== this.record.sequence) {
        throw new TerminalError('invalid-state', `final delta of ${this.record.vm} did not complete (state ${this.record.state}, applied ${this.record.applied} of ${this.record.sequence})`);
      }
      await this.#apply('plannedFailoverPrepared');
      return { sequence: this.record.applied, state: this.record.state };
    });
  }

  /** Cancels a prepared planned failover: replication resumes in the same direction. */
  cancelPrepared(): Promise<void> {
    return this.#serial(() => this.#apply('cancel'));
  }

  /** RequestReplicationStateChange(Suspended): tracking goes on, nothing ships. */
  suspend(by: 'operator' | 'engine' = 'operator'): Promise<void> {
    return this.#serial(async () => {
      this.record.state = transition(this.record.state, 'suspend');
      this.record.suspendedBy = by;
      await this.save();
    });
  }

  /** Resume after a suspend; also the operator's reset after a Critical error (then a resync runs). */
  resume(): Promise<void> {
    return this.#serial(async () => {
      if (this.record.state === 'Critical') {
        this.#retry.operatorReset();
        delete this.record.terminalError;
        this.record.resync = { bytesDone: 0, bytesTotal: 0, reason: 'operator reset after a critical error' };
        await this.#apply('operatorReset');
        return;
      }
      this.record.state = transition(this.record.state, 'resume');
      delete this.record.suspendedBy;
      this.#retry.operatorReset();
      await this.save();
    });
  }

  /** Resynchronise now, whatever the window. */
  requestResync(): Promise<CycleResult> {
    return this.#serial(async () => {
      if (this.record.state === 'Replicating' || this.record.state === 'Suspended') {
        this.record.resync = { bytesDone: 0, bytesTotal: 0, reason: 'requested by an operator' };
        this.record.state = transition(this.record.state, 'resyncRequested');
        await this.save();
      }
      return this.#cycle(true);
    });
  }

  /** ModifyReplicationSettings: a new policy applies from the next cycle; retention and the bandwidth cap change at once. */
  modify(policy: ResolvedPolicySpec): Promise<void> {
    this.bandwidth.set(policy.bandwidth); // a transfer under way follows the new cap, not only the next one
    return this.#serial(async () => {
      this.record.policy = policy;
      await this.#link.settings(this.id, retentionOf(policy));
      await this.save();
    });
  }

  resetStatistics(): void {
    this.#stats.reset();
  }

  view(): RelationshipView {
    const pending = this.source.disks.reduce((n, d) => n + d.pendingBytes(), 0);
    return primaryView({ record: this.record, now: this.#clock.now(), frequencyMs: healthPeriodMs(this.record.policy), diskBytes: this.#totalBytes(), pending, stats: this.#stats, retry: this.#retry });
  }

  /** RemoveReplicationRelationship on the primary: stop, drop the outbox; the replica is told when reachable. */
  remove(opts: { replicaToo: boolean }): Promise<void> {
    return this.#serial(async () => {
      await this.#dropStream(false);
      if (opts.replicaToo) {
        try {
          await this.#link.remove(this.id);
        } catch (e) {
          if (!(TerminalError.is(e) && e.code === 'not-found')) throw e;
        }
      }
      await rm(this.dir, { recursive: true, force: true });
    });
  }
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

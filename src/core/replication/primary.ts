// The primary side of one replication relationship: cuts the VM's tracked disks at the policy's
// frequency, seals each cut into logs in the outbox and ships them to the Replica server, which
// acknowledges a log once it is durable and reports what it applied. Initial replication (network,
// external media, existing replica) and resynchronisation are cuts of every block, the last two
// shipping only blocks whose keyed checksums differ from the replica's.
//
// This file holds the relationship's state and chooses, each cycle, which transfer runs; the
// transfers themselves (transfer-*.ts) see only a TransferContext and never change the state.
import { AsyncMutex } from '../async-mutex.ts';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { accepts, transition, type ReplicationEvent, type State } from './replication-state.ts';
import { RetryState } from './retry.ts';
import { ReplicationStatistics } from './statistics.ts';
import type { RelationshipKeys } from '../types.ts';
import type { Clock } from '../../model/clock.ts';
import { TerminalError } from '../../model/errors.ts';
import type { ResolvedPolicySpec } from '../../model/desired.ts';
import type { RelationshipView } from '../../model/replication-api.ts';
import type { Logger } from '../../model/logger.ts';
import { writeJsonAtomic } from '../atomic-file.ts';
import type { CutSource, ReplicaLink } from './ports.ts';
import { frequencyMs, healthPeriodMs, inWindow, retentionOf, type CycleResult, type PrimaryRecord } from './primary-record.ts';
import { primaryView } from './primary-view.ts';
import { BandwidthCap, throttledLink } from './throttle.ts';
import { totalBytes, type TransferContext } from './transfer-context.ts';
import { exportMedia, initialCopy } from './transfer-initial.ts';
import { StreamedInitialCopy } from './transfer-initial-stream.ts';
import { delta, shipBacklog } from './transfer-delta.ts';
import { resync } from './transfer-resync.ts';

export class PrimaryReplication {
  readonly dir: string;
  record: PrimaryRecord;
  readonly source: CutSource;
  readonly #link: ReplicaLink;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #stats: ReplicationStatistics;
  readonly #retry: RetryState;
  readonly #busy = new AsyncMutex();
  /** The policy's bandwidth cap on what this relationship sends (its link may be shared). */
  readonly bandwidth: BandwidthCap;
  /** What the transfers see of this relationship. */
  readonly #transfer: TransferContext;
  /** A streamed initial copy, whose cut is held between attempts. */
  readonly #streamed: StreamedInitialCopy;

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
    this.source = opts.source;
    this.bandwidth = new BandwidthCap(opts.record.policy.bandwidth, opts.clock);
    this.#link = throttledLink(opts.link, () => this.bandwidth.bucket());
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#stats = new ReplicationStatistics(opts.clock, opts.record.statistics);
    this.#retry = new RetryState(opts.clock, opts.record.retry);
    this.#transfer = this.#transferContext(opts.keys);
    this.#streamed = new StreamedInitialCopy(this.#transfer);
  }

  #transferContext(keys: RelationshipKeys): TransferContext {
    const primary = this;
    return {
      // A getter: `record` is a public field, and a transfer must advance the one held now.
      get record() {
        return primary.record;
      },
      source: this.source,
      link: this.#link,
      keys,
      clock: this.#clock,
      log: this.#log,
      outbox: (seq) => (seq === undefined ? join(this.dir, 'outbox') : join(this.dir, 'outbox', String(seq).padStart(12, '0'))),
      save: () => this.save(),
      recordSuccess: (cycle) => this.#stats.recordSuccess(cycle),
    };
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
    if (accepts(this.record.state, 'trackerLost')) {
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
      this.record.initial = { method: ir.method, bytesDone: 0, bytesTotal: totalBytes(this), ...(startAt && { startAt }) };
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
    if (this.#streamed.active && r.state !== 'InitialReplicationInProgress') await this.#streamed.drop(false);
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

  /** External media: once exported, the relationship waits for the replica site's import. */
  async #exportMedia(): Promise<CycleResult> {
    const result = await exportMedia(this.#transfer);
    await this.#apply('waitImport');
    return result;
  }

  /** The initial copy (streamed, through the outbox or from an existing replica): done once the replica holds point 1. */
  async #initial(): Promise<CycleResult> {
    const result = await initialCopy(this.#transfer, this.#streamed);
    if (result.applied >= 1) await this.#apply('initialDone');
    return result;
  }

  /**
   * A cycle while replicating: the outbox's backlog ships, then a delta, unless the changes
   * pending exceed the policy's share of a disk, which makes it a resync instead.
   */
  async #delta(): Promise<CycleResult> {
    const r = this.record;
    const shipped = await shipBacklog(this.#transfer);
    const threshold = r.policy.resync.thresholdPercent / 100;
    if (this.source.disks.some((d) => d.pendingBytes() > threshold * d.size)) {
      r.resync = { bytesDone: 0, bytesTotal: 0, reason: `pending changes exceed ${threshold * 100}% of a disk` };
      await this.#apply('thresholdExceeded');
      // Inside the automatic window the resync runs in this cycle, not one interval later.
      if (!this.#resyncAllowed(false)) return { action: 'none', applied: r.applied };
      await this.#apply('resync');
      return this.#resync();
    }
    return delta(this.#transfer, shipped);
  }

  /** Resynchronisation: the relationship replicates again once the differing blocks are applied. */
  async #resync(): Promise<CycleResult> {
    const result = await resync(this.#transfer);
    await this.#apply('resyncDone');
    return result;
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
    return primaryView({ record: this.record, now: this.#clock.now(), frequencyMs: healthPeriodMs(this.record.policy), diskBytes: totalBytes(this), pending, stats: this.#stats, retry: this.#retry });
  }

  /** RemoveReplicationRelationship on the primary: stop, drop the outbox; the replica is told when reachable. */
  remove(opts: { replicaToo: boolean }): Promise<void> {
    return this.#serial(async () => {
      await this.#streamed.drop(false);
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

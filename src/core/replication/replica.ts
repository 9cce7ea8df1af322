// The Replica server's side of one relationship: verifies each log before acknowledging it, keeps
// it durable, applies complete points in sequence and serves checksums, recovery points and
// point-in-time digests; its state moves only through the transition table, and the failover
// verbs (replica-failover.ts) run on its points. External-media imports arrive as sequence 1.
import { AsyncMutex } from '../async-mutex.ts';
import { cp, readdir, rename, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { selectPoint } from '../replica/point-selector.ts';
import { writeJsonAtomic } from '../atomic-file.ts';
import { blockChecksums, compareChecksums, compareKeys, type BlockDigests, type BlockReader, type CompareKeys, type CompareRequest } from './block-checksums.ts';
import { mediaLogs } from './media-logs.ts';
import { openLog } from '../log/log-format.ts';
import { ReplicaStore } from '../replica/replica-store.ts';
import { isDiskFull } from '../disk-full.ts';
import { BLOCK_SIZE, type RelationshipKeys } from '../types.ts';
import type { Clock } from '../../model/clock.ts';
import { RetryableError, TerminalError } from '../../model/errors.ts';
import type { DiskInfo, RecoveryPointInfo, RecoveryPointSelector, RelationshipView, ReplicaStatus, VmConfig } from '../../model/replication-api.ts';
import { OverlayDevice } from '../replica/overlay-device.ts';
import { inGroup, replicaTransition, type ReplicaSideState, type ReplicationEvent } from './replication-state.ts';
import { cancel, cleanupTestFailover, commit, failover, reverse, testFailover, type FailoverStarted, type RecoveryVms, type TestFailoverStarted } from './replica-failover.ts';
import { ForwardSource } from './forward-source.ts';
import { replicaView } from './replica-view.ts';
import type { RecoveryPoint } from '../replica/recovery-points.ts';
import type { Logger } from '../../model/logger.ts';
import { createHash } from 'node:crypto';

/** The event that completes a replica's initial copy from its waiting state. */
const initialDone = (state: ReplicaSideState): ReplicationEvent => (state === 'WaitingForInitialReplicationImport' ? 'imported' : 'initialDone');

export interface ReplicaRecord {
  id: string;
  role: 'Replica';
  vm: string;
  /** Host name of the primary (its certificate's name). */
  primary: string;
  storagePath: string;
  trustGroup?: string;
  disks: DiskInfo[];
  retention: { additional: number; appConsistentEvery?: number };
  /** The primary's machine definition (vCPUs, memory, boot, MACs): a failover starts the same machine. */
  vmConfig?: VmConfig;
  /** Changed only by `move`, through the transition table. */
  state: ReplicaSideState;
  integrityErrors: number;
  /** A `<vm>-Test` VM running on overlays of `sequence` (replication continues). */
  testFailover?: { vm: string; sequence: number };
  /** The VM failed over to `sequence` (overlays until committed; replication stopped). */
  failover?: { vm: string; sequence: number };
  /** Set by commit: the chain and its recovery points are gone. */
  committed?: boolean;
  /** Id of the relationship forwarding this replica to an extended replica. */
  extendedBy?: string;
  lastIntegrityError?: { message: string; at: number };
}

export class ReplicaReplication {
  readonly dir: string;
  record: ReplicaRecord;
  store: ReplicaStore;
  /** Set while the replica's files move: replication is refused (retryable) until done. */
  #moving = false;
  /** Set while this replica forwards to an extended replica. */
  forward: ForwardSource | undefined;
  readonly #keys: RelationshipKeys;
  readonly #atRestKey: Buffer | undefined;
  readonly #clock: Clock;
  readonly #log: Logger;

  private constructor(dir: string, record: ReplicaRecord, store: ReplicaStore, keys: RelationshipKeys, atRestKey: Buffer | undefined, clock: Clock, log: Logger) {
    this.dir = dir;
    this.record = record;
    this.store = store;
    this.#keys = keys;
    this.#atRestKey = atRestKey;
    this.#clock = clock;
    this.#log = log;
  }

  /**
   * Opens the store (finishing any apply a crash interrupted). `atRestKey` is the replica site's
   * own key for the images and undo (never the primary's, never in a declaration).
   */
  static async open(dir: string, record: ReplicaRecord, keys: RelationshipKeys, atRestKey: Buffer | undefined, clock: Clock, log: Logger): Promise<ReplicaReplication> {
    await mkdir(record.storagePath, { recursive: true });
    const store = await ReplicaStore.open(record.storagePath, keys, {
      relationshipId: record.id,
      disks: record.disks,
      retention: record.retention,
      ...(atRestKey && { atRestKey }),
    });
    const r = new ReplicaReplication(dir, record, store, keys, atRestKey, clock, log);
    await r.#initialCopied();
    return r;
  }

  get id(): string {
    return this.record.id;
  }

  readonly #saves = new AsyncMutex();

  /** Persists the record; saves run one after another, each writing the record as it is then. */
  save(): Promise<void> {
    return this.#saves.run(() => writeJsonAtomic(join(this.dir, 'state.json'), this.record));
  }

  /** Moves the state through the transition table (refused there when illegal), with `change` to the record; then saves. */
  async move(event: ReplicationEvent, change?: (r: ReplicaRecord) => void): Promise<void> {
    const next = replicaTransition(this.record.state, event);
    change?.(this.record);
    this.record.state = next;
    await this.save();
  }

  /** A change to the record that leaves the state as it is; then saves. */
  async update(change: (r: ReplicaRecord) => void): Promise<void> {
    change(this.record);
    await this.save();
  }

  /** The first applied point ends the initial copy (also one a crash left applied but not recorded). */
  async #initialCopied(): Promise<void> {
    if (this.store.applied >= 1 && inGroup(this.record.state, 'initial')) await this.move(initialDone(this.record.state));
  }

  /** Replication into a replica stops while it is failed over (Hyper-V refuses it too). */
  acceptingLogs(): void {
    if (this.#moving) throw new RetryableError('busy', `replica of ${this.record.vm} is moving to new storage; replication resumes after the move`);
    if (inGroup(this.record.state, 'failedOver')) {
      throw new TerminalError('invalid-state', `replica of ${this.record.vm} is failed over (${this.record.state}); replication from ${this.record.primary} stopped`);
    }
  }

  /**
   * Verifies a transferred log (seal, relationship, disk, sequence) and makes it durable; only
   * then may the primary be acknowledged. A damaged log is deleted and refused, so the primary
   * sends it again; nothing of it is applied.
   */
  async receive(diskId: string, sequence: number, path: string): Promise<void> {
    this.acceptingLogs();
    try {
      const log = await openLog(path, this.#keys, { relationshipId: this.id, diskId, sequence });
      await this.forward?.mark(diskId, log.index);
    } catch (e) {
      await rm(path, { force: true });
      this.record.integrityErrors++;
      this.record.lastIntegrityError = { message: (e as Error).message, at: this.#clock.now() };
      await this.save();
      this.#log.warn('replication log rejected', { relationship: this.id, disk: diskId, sequence, error: (e as Error).message });
      throw e;
    }
    await this.store.receive(diskId, sequence, path, { move: true });
  }

  /**
   * One segment of a streamed initial copy (core/replication/initial-stream.ts), written as it arrives and
   * acknowledged once durable; a damaged or forged one is refused (and counted) and sent again.
   */
  async receiveInitialSegment(diskId: string, index: number, body: AsyncIterable<Buffer | Uint8Array>): Promise<ReplicaStatus> {
    this.acceptingLogs();
    try {
      await this.store.receiveInitialSegment(diskId, index, body);
    } catch (e) {
      if (RetryableError.is(e) && e.code === 'integrity') {
        this.record.integrityErrors++;
        this.record.lastIntegrityError = { message: (e as Error).message, at: this.#clock.now() };
        await this.save();
        this.#log.warn('initial copy segment rejected', { relationship: this.id, disk: diskId, segment: index, error: (e as Error).message });
      }
      throw e;
    }
    return this.status();
  }

  /** Drops received logs not applied yet (a resynchronisation restarts the chain from the applied point). */
  async discardPending(): Promise<ReplicaStatus> {
    this.acceptingLogs();
    const n = await this.store.discardPending();
    if (n) this.#log.info('discarded logs superseded by a resynchronisation', { relationship: this.id, logs: n });
    return this.status();
  }

  /** Applies every complete point received, then prunes by retention. */
  async apply(): Promise<ReplicaStatus> {
    this.acceptingLogs();
    try {
      await this.store.applyPending();
    } catch (e) {
      // Not the log's fault: it stays received and applies once there is room (or an operator acts).
      if (TerminalError.is(e) || isDiskFull(e)) throw e;
      this.record.integrityErrors++;
      this.record.lastIntegrityError = { message: (e as Error).message, at: this.#clock.now() };
      await this.save();
      this.#log.warn('apply failed; the log will be requested again', { relationship: this.id, error: (e as Error).message });
    }
    await this.store.prune(this.#clock.now());
    await this.#initialCopied();
    return this.status();
  }

  async status(): Promise<ReplicaStatus> {
    const received: Record<string, number[]> = {};
    for (const name of await readdir(join(this.record.storagePath, 'incoming')).catch(() => [] as string[])) {
      const m = /^(\d+)\.(.+)\.hrl$/.exec(name);
      if (m) (received[m[2]] ??= []).push(Number(m[1]));
    }
    for (const list of Object.values(received)) list.sort((a, b) => a - b);
    const initial = this.store.initialProgress();
    return {
      id: this.id,
      vm: this.record.vm,
      primary: this.record.primary,
      storagePath: this.record.storagePath,
      state: this.record.state,
      applied: this.store.applied,
      received,
      points: this.points(),
      disks: this.record.disks,
      ...(initial && { initial }),
    };
  }

  points(): RecoveryPointInfo[] {
    return this.store.points().map((p) => this.pointInfo(p));
  }

  /**
   * Checksums of a disk at the latest point (before any point: the image as placed, an existing
   * replica, or zeroes). Without `compare`: keyed 4 KiB HMAC-SHA-256 digests of every block (the
   * older whole-disk scheme). With it: the multi-level compare's digests of the requested blocks.
   */
  async checksums(diskId: string, compare?: CompareRequest): Promise<BlockDigests> {
    const disk = this.record.disks.find((d) => d.id === diskId);
    if (!disk) throw new TerminalError('not-found', `replica ${this.id} has no disk ${diskId}`);
    const digest = (reader: BlockReader) =>
      compare ? compareChecksums(reader, compare.blockSize, this.#compareKeys(), compare.only) : blockChecksums(reader, BLOCK_SIZE, this.#keys.macKey);
    if (this.store.applied === 0) {
      const image = await this.store.openImage(diskId);
      try {
        return await digest(image);
      } finally {
        await image.close();
      }
    }
    const view = await this.store.openView(this.store.applied, diskId);
    try {
      return await digest(view);
    } finally {
      await view.close();
    }
  }

  #compare: CompareKeys | undefined;
  #compareKeys(): CompareKeys {
    this.#compare ??= compareKeys(this.#keys.macKey);
    return this.#compare;
  }

  /** SHA-256 of a disk at a retained point, read through the point-in-time view. */
  async pointDigest(sequence: number, diskId: string): Promise<string> {
    const view = await this.store.openView(sequence, diskId);
    try {
      const h = createHash('sha256');
      const chunk = 8 << 20;
      const read = (at: number) => view.read(at, Math.min(chunk, view.size - at));
      let next = view.size > 0 ? read(0) : undefined;
      for (let at = 0; at < view.size; at += chunk) {
        const buf = await next!;
        next = at + chunk < view.size ? read(at + chunk) : undefined; // the next chunk loads while this one hashes
        h.update(buf);
      }
      return h.digest('hex');
    } finally {
      await view.close();
    }
  }

  async setRetention(retention: ReplicaRecord['retention']): Promise<void> {
    await this.store.setRetention(retention);
    this.record.retention = retention;
    await this.save();
  }

  /**
   * Imports an external-media export (made by the primary) as sequence 1: each verified raw image
   * becomes a full log and goes through the ordinary receive-and-apply path.
   */
  async importMedia(folder: string): Promise<ReplicaStatus> {
    if (this.store.applied >= 1) throw new TerminalError('invalid-state', `replica ${this.id} already holds its initial copy`);
    for await (const log of mediaLogs(folder, { relationshipId: this.id, keys: this.#keys, expect: this.record.disks, dir: this.dir })) {
      await this.receive(log.diskId, 1, log.path);
    }
    return this.apply();
  }

  /** The retained point a selector names: latest, latest app-consistent, newest at or before a time, or a sequence. */
  resolvePoint(selector: RecoveryPointSelector = 'latest'): RecoveryPoint {
    return selectPoint(this.store.points(), selector, `replica of ${this.record.vm}`);
  }

  /**
   * Resolves `selector` and opens overlays on that point. A point retention drops between the two
   * (a newer one applied meanwhile) is resolved again: `latest` or a time then names the newer one.
   */
  async openPointOverlays(selector: RecoveryPointSelector, dir: string): Promise<{ point: RecoveryPoint; devices: Map<string, OverlayDevice> }> {
    for (let attempt = 1; ; attempt++) {
      const point = this.resolvePoint(selector);
      try {
        return { point, devices: await this.openOverlays(point.sequence, dir) };
      } catch (e) {
        const dropped = TerminalError.is(e) && e.code === 'not-found' && !this.store.points().some((p) => p.sequence === point.sequence);
        if (!dropped || typeof selector === 'number' || attempt >= 3) throw e;
      }
    }
  }

  /** One overlay per disk on point `sequence`, files `<dir>/<disk>.overlay`; the point stays retained while open. */
  async openOverlays(sequence: number, dir: string): Promise<Map<string, OverlayDevice>> {
    const out = new Map<string, OverlayDevice>();
    try {
      for (const d of this.record.disks) {
        const view = await this.store.openView(sequence, d.id);
        out.set(d.id, await OverlayDevice.open(view, join(dir, `${d.id}.overlay`)));
      }
    } catch (e) {
      for (const o of out.values()) await o.close();
      throw e;
    }
    return out;
  }

  pointInfo(p: RecoveryPoint): RecoveryPointInfo {
    return { sequence: p.sequence, time: new Date(p.time).toISOString(), consistency: p.consistency, cutId: p.cutId };
  }

  /**
   * Moves the replica's files (images, logs, undo, journal) to `newRoot/<id>`: replication is in
   * error (retryable) during the move and resumes after; the old files are removed.
   */
  async moveStorage(newRoot: string): Promise<void> {
    if (this.record.testFailover || this.record.failover) throw new TerminalError('invalid-state', `replica of ${this.record.vm} has a failover VM running on it; move its storage afterwards`);
    const to = join(newRoot, this.id);
    if (to === this.record.storagePath) return;
    this.#moving = true;
    try {
      await this.store.close();
      await mkdir(newRoot, { recursive: true });
      await rename(this.record.storagePath, to).catch(async (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EXDEV') throw e;
        await cp(this.record.storagePath, to, { recursive: true });
        await rm(this.record.storagePath, { recursive: true, force: true });
      });
      const from = this.record.storagePath;
      this.record.storagePath = to;
      this.store = await ReplicaStore.open(to, this.#keys, {
        relationshipId: this.id, disks: this.record.disks, retention: this.record.retention, ...(this.#atRestKey && { atRestKey: this.#atRestKey }),
      });
      if (this.forward) this.forward = await ForwardSource.open(this.store, this.record.disks, this.dir);
      await this.save();
      this.#log.info('replica storage moved', { relationship: this.id, from, to });
    } finally {
      this.#moving = false;
    }
  }

  /** The forwarding state for extended replication (opened once, kept beside the record). */
  async openForward(): Promise<ForwardSource> {
    this.forward ??= await ForwardSource.open(this.store, this.record.disks, this.dir);
    return this.forward;
  }

  /** The failover waiting for commit or cancel, if any. */
  get waitingFailover(): ReplicaRecord['failover'] {
    return this.record.state === 'FailoverWaitingCompletion' ? this.record.failover : undefined;
  }

  // The failover verbs (replica-failover.ts), over the host's VM plumbing.
  testFailover = (vms: RecoveryVms, selector?: RecoveryPointSelector): Promise<TestFailoverStarted> => testFailover(this, vms, selector);
  cleanupTestFailover = (vms: RecoveryVms): Promise<string> => cleanupTestFailover(this, vms);
  failover = (vms: RecoveryVms, selector?: RecoveryPointSelector): Promise<FailoverStarted> => failover(this, vms, selector);
  commit = (vms: RecoveryVms): Promise<void> => commit(this, vms);
  cancel = (vms: RecoveryVms): Promise<void> => cancel(this, vms);
  reverse = (vms: RecoveryVms): Promise<void> => reverse(this, vms);

  view(now: number): RelationshipView {
    return replicaView(this.record, this.store, now);
  }

  async remove(): Promise<void> {
    if (!this.record.committed) await this.store.removeAll();
    await rm(this.dir, { recursive: true, force: true });
  }

  async close(): Promise<void> {
    if (!this.record.committed) await this.store.close();
  }
}

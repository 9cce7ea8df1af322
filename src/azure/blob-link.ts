// The primary's link to an Azure storage account instead of a Replica server (Site Recovery's
// model): each disk is a page blob laid out as a fixed VHD, each recovery point a snapshot of every
// disk's blob. Logs are verified and decrypted here, on the primary, because Azure stores plain
// disk data (it encrypts at rest itself); the relationship keys never leave this process.
import { KeyedMutex } from '../core/async-mutex.ts';
import type { ContainerClient } from '@azure/storage-blob';
import type { BlockDigests } from '../core/replication/block-checksums.ts';
import { openLog } from '../core/log/log-format.ts';
import { checkRetention, selectRetained, type RecoveryPoint } from '../core/replica/recovery-points.ts';
import { BLOCK_SIZE, type RelationshipKeys } from '../core/types.ts';
import { systemClock, type Clock } from '../model/clock.ts';
import { TerminalError } from '../model/errors.ts';
import type { Site } from '../model/types.generated.ts';
import type { CreateReplicaRequest, RecoveryPointInfo, ReplicaStatus } from '../transport/agent-api.ts';
import { silentLogger, type Logger } from '../transport/logger.ts';
import { azureContainerFromSite, type AzureRetryOptions } from './credentials.ts';
import { DiskBlobs, type LiveState } from './disk-blobs.ts';
import { azureCall } from './errors.ts';
import { AzureFailoverState } from './failover-state.ts';
import { TransferCount } from './page-io.ts';
import type { FailbackOptions, FailbackResult, ReplicaLink } from '../core/replication/ports.ts';
import type { BlockDevice } from '../model/block-device.ts';
import { failbackFromAzure } from './failback.ts';
import { completePoints, diskPointsOf, diskUuid, keyFingerprint, readRecord, requireRecord, saveRecord, snapshotIndex, type AzureReplicaRecord, type DiskPoint, type SnapshotIndex } from './replica-index.ts';

export interface AzureBlobLinkOptions {
  readonly container: ContainerClient;
  /** Relationship keys, or a lookup by relationship id; createReplica also registers `req.keys`. */
  readonly keys?: RelationshipKeys | ((relationshipId: string) => RelationshipKeys | undefined);
  /** @default systemClock */
  readonly clock?: Clock;
  /** @default silentLogger */
  readonly log?: Logger;
  /** Name reported as the relationship's primary in status. @default "" */
  readonly primary?: string;
}

export class AzureBlobLink implements ReplicaLink {
  readonly container: ContainerClient;
  /** Failovers to Azure recorded in the container: while one is in place nothing here changes the replica. */
  readonly failoverState: AzureFailoverState;
  /** Bytes uploaded and downloaded by this link (bodies). */
  readonly count = new TransferCount();
  readonly #keys = new Map<string, RelationshipKeys>();
  readonly #lookup: ((id: string) => RelationshipKeys | undefined) | undefined;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #primary: string;
  /** One operation at a time per relationship, as the Replica server does. */
  readonly #busy = new KeyedMutex();

  constructor(opts: AzureBlobLinkOptions) {
    this.container = opts.container;
    this.failoverState = new AzureFailoverState(opts.container);
    if (typeof opts.keys === 'function') this.#lookup = opts.keys;
    else if (opts.keys) {
      const k = opts.keys;
      this.#lookup = () => k;
    }
    this.#clock = opts.clock ?? systemClock;
    this.#log = opts.log ?? silentLogger;
    this.#primary = opts.primary ?? '';
  }

  #serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.#busy.run(id, fn);
  }

  keysFor(id: string): RelationshipKeys {
    const k = this.#keys.get(id) ?? this.#lookup?.(id);
    if (!k) throw new TerminalError('invalid-state', `no keys for relationship ${id}: pass them to the Azure link or create the replica first`);
    return k;
  }

  diskBlobs(id: string, diskId: string): DiskBlobs {
    return new DiskBlobs(this.container, id, diskId, this.keysFor(id).macKey, this.count);
  }

  /** Where this relationship lives, without any SAS token the container URL may carry. */
  #storagePath(id: string): string {
    const u = new URL(this.container.url);
    u.search = '';
    return `${u.toString().replace(/\/$/, '')}/${id}`;
  }

  record(id: string): Promise<AzureReplicaRecord> {
    return requireRecord(this.container, id, this.count);
  }

  /** The retained, complete recovery points of one disk, oldest first. */
  async diskPoints(id: string, diskId: string): Promise<DiskPoint[]> {
    return diskPointsOf(await this.record(id), await snapshotIndex(this.container, id), diskId);
  }

  async #status(rec: AzureReplicaRecord, snaps?: SnapshotIndex): Promise<ReplicaStatus> {
    snaps ??= await snapshotIndex(this.container, rec.id);
    const received: Record<string, number[]> = {};
    for (const d of rec.disks) {
      const live = await this.diskBlobsFor(rec, d.id).live();
      if (live.written && live.written.sequence > rec.applied && !live.writing) received[d.id] = [live.written.sequence];
    }
    const points: RecoveryPointInfo[] = completePoints(rec, snaps).map((p) => ({
      sequence: p.sequence,
      time: new Date(p.cutTime).toISOString(),
      consistency: p.consistency,
      cutId: p.cutId,
    }));
    return {
      id: rec.id,
      vm: rec.vm,
      primary: this.#primary,
      storagePath: this.#storagePath(rec.id),
      state: rec.applied >= 1 ? 'Replicating' : 'ReadyForInitialReplication',
      applied: rec.applied,
      received,
      points,
      disks: rec.disks,
    };
  }

  diskBlobsFor(rec: AzureReplicaRecord, diskId: string): DiskBlobs {
    return new DiskBlobs(this.container, rec.id, diskId, this.keysFor(rec.id).macKey, this.count);
  }

  createReplica(req: CreateReplicaRequest): Promise<ReplicaStatus> {
    return this.#serial(req.id, async () => {
      const keys: RelationshipKeys = { encryptionKey: Buffer.from(req.keys.encryptionKey, 'base64'), macKey: Buffer.from(req.keys.macKey, 'base64') };
      if (keys.encryptionKey.length !== 32 || keys.macKey.length !== 32) throw new TerminalError('invalid-argument', `relationship ${req.id}: keys must be 32 bytes each`);
      checkRetention(req.retention);
      const fingerprint = keyFingerprint(keys);
      const existing = await readRecord(this.container, req.id, this.count);
      if (existing) {
        if (existing.keyFingerprint !== fingerprint) {
          throw new TerminalError('invalid-state', `relationship ${req.id} already exists in container ${this.container.containerName} with other keys`);
        }
        this.#keys.set(req.id, keys);
        return this.#status(existing);
      }
      this.#keys.set(req.id, keys);
      const rec: AzureReplicaRecord = {
        id: req.id,
        vm: req.vm,
        disks: req.disks.map((d) => ({ id: d.id, size: d.size })),
        keyFingerprint: fingerprint,
        retention: req.retention,
        applied: 0,
        createdAt: new Date(this.#clock.now()).toISOString(),
        ...(this.#primary && { primary: this.#primary }),
      };
      for (const d of rec.disks) {
        await this.diskBlobsFor(rec, d.id).create(d.size, { uuid: diskUuid(rec.id, d.id), timestamp: this.#clock.now() });
      }
      // The record goes last: until it exists the relationship does not, and a retry re-creates.
      await saveRecord(this.container, rec, this.count);
      this.#log.info('Azure replica created', { relationship: rec.id, container: this.container.containerName, disks: rec.disks.length });
      return this.#status(rec, new Map());
    });
  }

  status(id: string): Promise<ReplicaStatus> {
    return this.#serial(id, async () => this.#status(await this.record(id)));
  }

  upload(id: string, sequence: number, diskId: string, path: string, onProgress?: (done: number, total: number) => void): Promise<void> {
    return this.#serial(id, async () => {
      const rec = await this.record(id);
      if (!rec.disks.some((d) => d.id === diskId)) throw new TerminalError('not-found', `relationship ${id} has no disk ${diskId}`);
      await this.failoverState.assertNotFailedOver(id);
      // The whole log is verified before a single page changes.
      const log = await openLog(path, this.keysFor(id), { relationshipId: id, diskId, sequence });
      const h = log.header;
      if (sequence <= rec.applied) return; // applied already: the acknowledgement was lost
      if (h.kind === 'delta' && h.basePoint !== rec.applied) {
        throw new TerminalError('broken-chain', `log ${sequence} of ${id}/${diskId} applies on point ${h.basePoint} but the Azure replica holds point ${rec.applied}`);
      }
      const blobs = this.diskBlobsFor(rec, diskId);
      let live = await blobs.live();
      if (live.written?.sequence === sequence && live.written.cutId === h.cutId && !live.writing) return;
      const other = (p: { sequence: number; cutId: string }) => p.sequence !== sequence || p.cutId !== h.cutId;
      if ((live.writing && other(live.writing)) || (live.written && live.written.sequence > rec.applied && other(live.written))) {
        // Another cut was (half-)written, then abandoned (the primary resynchronised instead): undo it.
        live = await this.#rollback(rec, blobs, live);
      }
      const total = log.summary.dataBytes + log.summary.zeroBytes;
      let done = 0;
      const records = log.records();
      async function* counted() {
        for await (const e of records) {
          yield e;
          done += 'data' in e ? e.data.length : e.length;
          onProgress?.(done, total);
        }
      }
      await blobs.writeSequence({ sequence, cutTime: h.cutTime, consistency: h.consistency, cutId: h.cutId, diskSize: h.diskSize }, counted(), live, log.index);
    });
  }

  /** Puts a disk's live blobs back to the applied point, dropping whatever was written since. */
  async #rollback(rec: AzureReplicaRecord, blobs: DiskBlobs, live: LiveState, snaps?: SnapshotIndex): Promise<LiveState> {
    const base = diskPointsOf(rec, snaps ?? (await snapshotIndex(this.container, rec.id)), blobs.diskId).find((p) => p.point.sequence === rec.applied);
    this.#log.warn('Azure replica: dropping writes not applied', { relationship: rec.id, disk: blobs.diskId, abandoned: live.writing?.sequence ?? live.written?.sequence, to: rec.applied });
    await blobs.rollback(base, live);
    return blobs.live();
  }

  /** Drops sequences written but not applied (every disk back to the applied point): a resync starts from there. */
  discardPending(id: string): Promise<ReplicaStatus> {
    return this.#serial(id, async () => {
      const rec = await this.record(id);
      await this.failoverState.assertNotFailedOver(id);
      const snaps = await snapshotIndex(this.container, id);
      for (const d of rec.disks) {
        const blobs = this.diskBlobsFor(rec, d.id);
        const live = await blobs.live();
        if (live.writing || (live.written && live.written.sequence > rec.applied)) await this.#rollback(rec, blobs, live, snaps);
      }
      return this.#status(rec, snaps);
    });
  }

  apply(id: string): Promise<ReplicaStatus> {
    return this.#serial(id, async () => {
      const rec = await this.record(id);
      await this.failoverState.assertNotFailedOver(id);
      const lives = await Promise.all(rec.disks.map(async (d) => ({ disk: d, blobs: this.diskBlobsFor(rec, d.id), live: await this.diskBlobsFor(rec, d.id).live() })));
      const next = lives.map((l) => (l.live.writing === undefined ? l.live.written : undefined));
      const first = next[0];
      const ready = first && first.sequence > rec.applied && next.every((n) => n && n.sequence === first.sequence && n.cutId === first.cutId);
      if (!ready) {
        if (lives.some((l) => (l.live.written?.sequence ?? 0) > rec.applied || l.live.writing !== undefined)) {
          this.#log.info('Azure replica: a sequence is not complete on every disk yet; nothing applied', { relationship: id, applied: rec.applied });
        }
        return this.#status(rec);
      }
      const point = first;
      const snaps = await snapshotIndex(this.container, id);
      // Idempotent after a crash mid-apply: disks already snapshotted for this sequence are skipped.
      const done = snaps.get(point.sequence);
      for (const l of lives) {
        const have = done?.get(l.disk.id);
        if (have?.disk && have.sums && have.point.cutId === point.cutId) continue;
        await l.blobs.snapshot(point);
      }
      rec.applied = point.sequence;
      rec.disks = rec.disks.map((d, i) => ({ id: d.id, size: Math.max(d.size, lives[i].live.diskSize) }));
      await saveRecord(this.container, rec, this.count);
      return this.#status(rec, await this.#prune(rec));
    });
  }

  /** Deletes the snapshots of points the retention no longer keeps; returns what is left. */
  async #prune(rec: AzureReplicaRecord): Promise<SnapshotIndex> {
    const snaps = await snapshotIndex(this.container, rec.id);
    const points: RecoveryPoint[] = completePoints(rec, snaps).map((p) => ({ sequence: p.sequence, time: p.cutTime, consistency: p.consistency, cutId: p.cutId }));
    const keep = selectRetained(points, rec.retention, this.#clock.now());
    // A test failover's point stays until its cleanup: its Terraform imports those snapshots
    // whenever the operator applies it, possibly long after retention would have moved on.
    const test = await this.failoverState.test(rec.id);
    if (test) keep.add(test.sequence);
    for (const [seq, disks] of [...snaps]) {
      // Sequences above `applied` belong to an apply in progress; never touch them.
      if (seq > rec.applied || keep.has(seq)) continue;
      for (const [diskId, e] of disks) {
        const b = this.diskBlobsFor(rec, diskId);
        if (e.sums) await azureCall(b.sums.name, () => b.sums.withSnapshot(e.sums!).deleteIfExists());
        if (e.disk) await azureCall(b.disk.name, () => b.disk.withSnapshot(e.disk!).deleteIfExists());
      }
      snaps.delete(seq);
    }
    return snaps;
  }

  /** Keyed 4 KiB digests of the disk at the latest point, from its sums snapshot: no disk data is read. */
  checksums(id: string, diskId: string): Promise<BlockDigests> {
    return this.#serial(id, async () => {
      const rec = await this.record(id);
      const disk = rec.disks.find((d) => d.id === diskId);
      if (!disk) throw new TerminalError('not-found', `relationship ${id} has no disk ${diskId}`);
      const blobs = this.diskBlobsFor(rec, diskId);
      const latest = diskPointsOf(rec, await snapshotIndex(this.container, id), diskId).at(-1);
      if (!latest) {
        const digests = Buffer.alloc(Math.ceil(disk.size / BLOCK_SIZE) * 32);
        for (let b = 0; b * BLOCK_SIZE < disk.size; b++) blobs.zeroDigest(Math.min(BLOCK_SIZE, disk.size - b * BLOCK_SIZE)).copy(digests, b * 32);
        return { blockSize: BLOCK_SIZE, size: disk.size, keyed: true, digests };
      }
      return blobs.digests(disk.size, latest.sums);
    });
  }

  settings(id: string, retention: CreateReplicaRequest['retention']): Promise<void> {
    return this.#serial(id, async () => {
      checkRetention(retention);
      const rec = await this.record(id);
      rec.retention = retention;
      await saveRecord(this.container, rec, this.count);
      await this.#prune(rec);
    });
  }

  /** Failback from Azure: one disk's live blob (what the failed-over VM wrote) onto a local target. */
  failback(id: string, diskId: string, target: BlockDevice | string, opts: FailbackOptions): Promise<FailbackResult> {
    return failbackFromAzure({ link: this, relationshipId: id, diskId, snapshot: 'current', target, method: opts.method, keys: opts.keys });
  }

  /** Deletes every blob of the relationship with its snapshots; nothing to delete is not an error. */
  remove(id: string): Promise<void> {
    return this.#serial(id, async () => {
      const names = new Set<string>();
      await azureCall(`${this.container.containerName}/${id}/`, async () => {
        for await (const b of this.container.listBlobsFlat({ prefix: `${id}/` })) names.add(b.name);
      });
      // The record goes first: a relationship without it no longer exists, even if a delete below fails.
      const order = [...names].sort((a, b) => (a.endsWith('/relationship.json') ? -1 : b.endsWith('/relationship.json') ? 1 : a.localeCompare(b)));
      for (const name of order) {
        await azureCall(name, () => this.container.getBlobClient(name).deleteIfExists({ deleteSnapshots: 'include' }));
      }
      this.#keys.delete(id);
    });
  }
}

export interface AzureLinkFromSiteOptions {
  readonly keys?: AzureBlobLinkOptions['keys'];
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly primary?: string;
  readonly retry?: AzureRetryOptions;
}

/** The link to an Azure Site, credentials read only from the environment variables the Site names. */
export function azureLinkFromSite(site: Site, env: NodeJS.ProcessEnv = process.env, opts: AzureLinkFromSiteOptions = {}): AzureBlobLink {
  return new AzureBlobLink({
    container: azureContainerFromSite(site, env, opts.retry),
    ...(opts.keys && { keys: opts.keys }),
    ...(opts.clock && { clock: opts.clock }),
    ...(opts.log && { log: opts.log }),
    ...(opts.primary && { primary: opts.primary }),
  });
}

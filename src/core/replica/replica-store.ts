// The replica of one relationship: per disk a sparse raw image at the latest applied point, sealed
// logs received into `incoming/`, undo segments that keep older recovery points readable, and a
// journal (`state.json`). Points apply in strict sequence; an apply killed at any instant is
// rolled forward on the next open, so the disks always sit at exactly one complete point.
//
// Apply of point N: verify every disk's log (decoding it into memory on the way, within a budget)
// -> write undo segments (old content of every range N overwrites that no obsolete point's undo
// already holds) -> journal "applying N" (points N makes obsolete folded into it) -> write the
// images, fsync -> journal "applied N" -> delete the logs -> prune. Logs carry whole block data,
// so re-applying N after a crash is idempotent.
import { AsyncMutex } from '../async-mutex.ts';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { TerminalError } from '../../model/errors.ts';
import type { RelationshipKeys } from '../types.ts';
import type { VerifiedLog } from '../log/log-format.ts';
import { checkKeys } from '../log/log-crypto.ts';
import { fsyncDir, unlinkIfExists } from '../log/log-io.ts';
import { classifyDiskFull } from '../disk-full.ts';
import { checkRetention } from './recovery-points.ts';
import type { RecoveryPoint, RetentionPolicy } from './recovery-points.ts';
import { readState, STATE_FILE } from './replica-state.ts';
import { cipherFor, ImageCipher } from '../disk/at-rest.ts';
import { encryptSeed, ImageFile, seedPath, setSeedAside } from '../disk/image-file.ts';
import type { InitialProgress } from '../replication/initial-stream.ts';
import { checkDiskId, exists, ReplicaCore, type AppliedPoint, type ReplicaStats } from './replica-core.ts';
import { LOG_NAME, ReplicaStaging } from './replica-staging.ts';
import { applyPoint, checkGap, finishApplying, verifyLog } from './replica-apply.ts';
import { prunePoints, removeUnreferenced } from './replica-prune.ts';
import { ReplicaViews, type BlockReader } from './replica-view.ts';

export type { BlockReader } from './replica-view.ts';
export type { RecoveryPoint, RetentionPolicy } from './recovery-points.ts';
export type { AppliedPoint, ReplicaStats } from './replica-core.ts';

export interface ReplicaStoreOptions {
  readonly relationshipId: string;
  readonly disks: readonly { readonly id: string; readonly size: number }[];
  /** Applied when the replica is created; later changes go through `setRetention`. @default { additional: 0 } */
  readonly retention?: RetentionPolicy;
  /**
   * The replica site's key for encryption at rest (at-rest.ts). A replica created with one keeps
   * its images and undo encrypted for life and needs the same key to open; one created without
   * (before encryption at rest) stays plain.
   */
  readonly atRestKey?: Buffer;
}

/**
 * The store keeps the journal, the images and the order of applies; receiving (replica-staging.ts),
 * the steps of one apply (replica-apply.ts), retention (replica-prune.ts) and reads at a point
 * (replica-view.ts) work on the same ReplicaCore under this store's lock.
 */
export class ReplicaStore {
  readonly dir: string;
  readonly #core: ReplicaCore;
  readonly #staging: ReplicaStaging;
  readonly #views: ReplicaViews;
  readonly #lock = new AsyncMutex();

  private constructor(core: ReplicaCore, staging: ReplicaStaging) {
    this.dir = core.dir;
    this.#core = core;
    this.#staging = staging;
    this.#views = new ReplicaViews(core, (fn) => this.#exclusive(fn));
  }

  /** Opens (creating if needed) the replica in `dir` and finishes any apply a crash interrupted. */
  static async open(dir: string, keys: RelationshipKeys, opts: ReplicaStoreOptions): Promise<ReplicaStore> {
    checkKeys(keys);
    for (const d of opts.disks) {
      checkDiskId(d.id);
      if (!Number.isSafeInteger(d.size) || d.size < 0) throw new TerminalError('invalid-argument', `disk ${d.id}: size ${d.size}`);
    }
    if (opts.retention) checkRetention(opts.retention);
    await mkdir(join(dir, 'incoming'), { recursive: true });
    await mkdir(join(dir, 'undo'), { recursive: true });
    let state = await readState(dir);
    if (state && state.relationshipId !== opts.relationshipId) {
      throw new TerminalError('invalid-state', `replica ${dir} belongs to relationship ${state.relationshipId}, not ${opts.relationshipId}`);
    }
    const fresh = !state;
    const cipher = fresh ? opts.atRestKey && new ImageCipher(opts.atRestKey) : cipherFor(state!.encryption, opts.atRestKey, `replica ${dir}`);
    // Images placed before the replica existed (an existing replica, a reverse replication's
    // seed) are plain: set aside now, encrypted once the journal says the replica is encrypted.
    if (fresh && cipher) for (const d of opts.disks) await setSeedAside(join(dir, `${d.id}.img`));
    const disks = new Map((state?.disks ?? []).map((d) => [d.id, d.size]));
    for (const d of opts.disks) disks.set(d.id, Math.max(d.size, disks.get(d.id) ?? 0));
    state = {
      format: 1,
      relationshipId: opts.relationshipId,
      applied: 0,
      applying: null,
      points: [],
      retention: opts.retention ?? { additional: 0 },
      nextSegment: 1,
      ...(cipher && { encryption: cipher.info }),
      ...state,
      disks: [...disks].map(([id, size]) => ({ id, size })),
    };
    const core = new ReplicaCore(dir, keys, state, cipher);
    const store = new ReplicaStore(core, await ReplicaStaging.open(core));
    if (fresh) await core.saveState(state);
    await store.#encryptSeeds();
    await store.#createImages();
    await store.#recover();
    return store;
  }

  /** How the replica's images and undo lie on disk. */
  get atRest(): 'aes-256-xts' | 'none' {
    return this.#core.cipher ? 'aes-256-xts' : 'none';
  }

  /** Path of a disk's image at the latest point. */
  diskPath(diskId: string): string {
    return this.#core.diskPath(diskId);
  }

  /** Sequence of the latest complete point (0 before the initial replication). */
  get applied(): number {
    return this.#core.state.applied;
  }

  /** Retained recovery points, oldest first; the last is the latest. */
  points(): RecoveryPoint[] {
    return this.#core.state.points.map(({ sequence, time, consistency, cutId }) => ({ sequence, time, consistency, cutId }));
  }

  retention(): RetentionPolicy {
    return this.#core.state.retention;
  }

  stats(): ReplicaStats {
    return { ...this.#core.counters };
  }

  // ------------------------------------------------------------------------------------ receiving

  /**
   * Stores a sealed log durably in `incoming/` (file and directory fsynced); only after this
   * resolves may the sender be acknowledged. Returns false when the log was already applied or
   * already received (a duplicate: nothing changes). With `move`, the source file is renamed
   * instead of copied (same file system only).
   */
  receive(diskId: string, sequence: number, srcPath: string, opts: { move?: boolean } = {}): Promise<boolean> {
    return this.#staging.receive(diskId, sequence, srcPath, opts);
  }

  /** `receive` from a stream (the transport's request body). */
  receiveStream(diskId: string, sequence: number, body: Readable | AsyncIterable<Buffer>): Promise<boolean> {
    return this.#staging.receiveStream(diskId, sequence, body);
  }

  /**
   * Deletes every received log not applied yet, and any streamed initial copy in progress. A
   * resynchronisation compares against the latest applied point (or, before point 1, the image)
   * and starts the chain again from there, so nothing cut before it may become a point.
   */
  discardPending(): Promise<number> {
    return this.#exclusive(() => this.#staging.discardPending());
  }

  /** The initial replication: every disk's `full` log of sequence 1, received and applied as one point. */
  async applyFull(logs: Readonly<Record<string, string>>): Promise<AppliedPoint[]> {
    for (const [diskId, path] of Object.entries(logs)) await this.receive(diskId, 1, path);
    return this.applyPending();
  }

  /** The streamed initial copy in progress, if any (its cut and each disk's segments done). */
  initialProgress(): InitialProgress | undefined {
    return this.#staging.initialProgress();
  }

  /**
   * Receives segment `index` of a streamed initial copy of `diskId` (initial-stream.ts): each frame
   * written at its offsets once it authenticates, the image fsynced and the checkpoint advanced
   * once the segment's MAC verified. Segment 0 of a new cut starts the copy again (the images
   * emptied); a segment already done is drained and acknowledged again; any other is refused. The
   * point becomes visible only when applyPending finds every segment of every disk in.
   */
  receiveInitialSegment(diskId: string, index: number, body: AsyncIterable<Buffer | Uint8Array>): Promise<InitialProgress> {
    return this.#exclusive(() => this.#staging.receiveInitialSegment(diskId, index, body));
  }

  // ------------------------------------------------------------------------------------- applying

  /**
   * Applies every complete point waiting in `incoming/`, in sequence. A log failing verification
   * is deleted and RetryableError('integrity') thrown before anything of its point is written; a
   * gap or a log not based on the current point throws TerminalError('broken-chain').
   */
  applyPending(): Promise<AppliedPoint[]> {
    const core = this.#core;
    return this.#exclusive(async () => {
      const done: AppliedPoint[] = [];
      // An apply that failed part way (I/O error) is finished before anything else: capturing
      // undo again from a half-written image would save the wrong content.
      await finishApplying(core);
      const initial = await this.#staging.commitInitial();
      if (initial) done.push(initial);
      for (;;) {
        const next = core.state.applied + 1;
        const pending = await this.#staging.listIncoming();
        const logs = pending.get(next);
        if (!logs || !core.state.disks.every((d) => logs.has(d.id))) {
          await checkGap(core, pending);
          return done;
        }
        const verified: VerifiedLog[] = [];
        for (const d of core.state.disks) verified.push(await verifyLog(core, logs.get(d.id)!, d.id, next));
        done.push(await applyPoint(core, next, verified));
        // A streamed copy abandoned for a log (a resync after the primary restarted) is moot now.
        await this.#staging.dropInitial();
        await prunePoints(core, core.state.points[core.state.points.length - 1].time);
      }
    });
  }

  // ------------------------------------------------------------------------------------- recovery

  async #createImages(): Promise<void> {
    const core = this.#core;
    let created = false;
    for (const d of core.state.disks) {
      const image = await ImageFile.open(core.diskPath(d.id), 'a+', core.cipher);
      try {
        if (await image.grow(d.size)) {
          await image.sync();
          created = true;
        }
      } finally {
        await image.close();
      }
    }
    if (created) await fsyncDir(this.dir);
  }

  /** Encrypts the plain seeds `open` set aside (again from the start after a crash: the seed stays until its image is whole). */
  async #encryptSeeds(): Promise<void> {
    const core = this.#core;
    if (!core.cipher) return;
    for (const d of core.state.disks) {
      if (!(await exists(seedPath(core.diskPath(d.id))))) continue;
      if (core.state.applied > 0) throw new TerminalError('invalid-state', `replica ${this.dir}: a plain seed ${seedPath(core.diskPath(d.id))} lies beside an image that has points applied`);
      try {
        await encryptSeed(core.diskPath(d.id), d.size, core.cipher);
      } catch (e) {
        throw await classifyDiskFull(e, this.dir, d.size);
      }
    }
  }

  /** Rolls an interrupted apply forward, then removes what no journal entry refers to. */
  async #recover(): Promise<void> {
    await finishApplying(this.#core);
    for (const name of await readdir(join(this.dir, 'incoming'))) {
      const m = LOG_NAME.exec(name);
      if (name.endsWith('.tmp') || (m && Number(m[1]) <= this.#core.state.applied)) await unlinkIfExists(join(this.dir, 'incoming', name));
    }
    await removeUnreferenced(this.#core);
    for (const name of await readdir(this.dir)) if (name.endsWith('.tmp')) await unlinkIfExists(join(this.dir, name));
  }

  // ------------------------------------------------------------------------------------ retention

  async setRetention(policy: RetentionPolicy): Promise<void> {
    checkRetention(policy);
    await this.#exclusive(() => this.#core.saveState({ ...this.#core.state, retention: { ...policy } }));
  }

  /** Drops the points the retention policy no longer keeps at time `now` (default: the latest cut time). Returns their sequences. */
  prune(now?: number): Promise<number[]> {
    return this.#exclusive(() => prunePoints(this.#core, now ?? this.#core.state.points.at(-1)?.time ?? 0));
  }

  // ---------------------------------------------------------------------------------------- views

  /**
   * The disk as its image holds it now, whatever point (none before the initial replication: the
   * image as placed or zeroes). Not pinned to a point: for reading before any point exists.
   */
  openImage(diskId: string): Promise<BlockReader> {
    return this.#views.openImage(diskId);
  }

  /**
   * A read-only view of a disk at a retained point, without copying the disk. The point stays
   * retained (pinned) until the view is closed; reads see the point even while newer points apply.
   */
  openView(sequence: number, diskId: string): Promise<BlockReader> {
    return this.#views.openView(sequence, diskId);
  }

  /** Writes a disk at a retained point as a full raw (sparse) image; returns its size and SHA-256. */
  exportView(sequence: number, diskId: string, destPath: string): Promise<{ size: number; sha256: string }> {
    return this.#views.exportView(sequence, diskId, destPath);
  }

  // ------------------------------------------------------------------------------------ lifecycle

  /** Releases open files; the store must not be used afterwards. */
  close(): Promise<void> {
    return this.#exclusive(async () => {
      await this.#core.closeUndoFiles();
      await this.#views.close();
    });
  }

  /** Deletes the replica: images, logs, undo and journal. */
  async removeAll(): Promise<void> {
    await this.close();
    for (const name of ['incoming', 'undo', STATE_FILE, ...this.#core.state.disks.map((d) => `${d.id}.img`)]) {
      await rm(join(this.dir, name), { recursive: true, force: true });
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#lock.run(fn);
  }
}

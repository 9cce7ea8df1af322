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
import { randomBytes, createHash } from 'node:crypto';
import { copyFile, mkdir, open, readdir, rename, rm, stat, truncate } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { RetryableError, TerminalError } from '../../model/errors.ts';
import type { RelationshipKeys } from '../types.ts';
import { openLog, readLogHeader } from '../log/log-format.ts';
import type { VerifiedLog } from '../log/log-format.ts';
import { checkKeys } from '../log/log-crypto.ts';
import { fsyncDir, unlinkIfExists } from '../log/log-io.ts';
import { classifyDiskFull, ensureSpace, isDiskFull } from '../disk-full.ts';
import { checkRetention, selectRetained } from './recovery-points.ts';
import type { RecoveryPoint, RetentionPolicy } from './recovery-points.ts';
import { RangeSet } from './replica-ranges.ts';
import { readState, writeState, STATE_FILE } from './replica-state.ts';
import type { ReplicaState, StoredPoint } from './replica-state.ts';
import { UNDO_CHUNK, UndoFile, UndoWriter, isZero, mergeUndo } from './replica-undo.ts';
import { readAtPoint } from './replica-view.ts';
import { cipherFor, ImageCipher } from '../disk/at-rest.ts';
import { encryptSeed, ImageFile, imageLength, RunWriter, seedPath, setSeedAside } from '../disk/image-file.ts';
import { receiveSegment, segmentCount, segmentRange, type InitialCheckpoint, type InitialProgress } from '../replication/initial-stream.ts';
import { readJsonIfExists, writeFileAtomic } from '../atomic-file.ts';
import type { LogHeader } from '../types.ts';

/** The streamed initial copy's checkpoint (initial-stream.ts), while one is in progress. */
const INITIAL_FILE = 'initial.json';
import type { BlockReader } from './replica-view.ts';

export type { BlockReader } from './replica-view.ts';
export type { RecoveryPoint, RetentionPolicy } from './recovery-points.ts';

const DISK_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const LOG_NAME = /^(\d+)\.(.+)\.hrl$/;
/** A point whose undo spans more segments than this per disk gets them merged into one. */
const COMPACT_SEGMENTS = 8;
const EXPORT_CHUNK = 4 << 20;

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

export interface AppliedPoint extends RecoveryPoint {
  /** Bytes of disk changed by the point: data plus zero extents, over all disks. */
  readonly bytes: number;
  readonly records: number;
}

export interface ReplicaStats {
  readonly pointsApplied: number;
  readonly logsApplied: number;
  /** Disk bytes the applied logs changed (data + zero extents). */
  readonly bytesApplied: number;
  /** Bytes of sealed logs written into `incoming/` by `receive`. */
  readonly bytesReceived: number;
  readonly imageBytesWritten: number;
  readonly undoBytesWritten: number;
  readonly journalBytesWritten: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function checkDiskId(id: string): void {
  if (!DISK_ID.test(id)) throw new TerminalError('invalid-argument', `disk id ${JSON.stringify(id)} is not a valid file name`);
}

async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Decoded log data kept in memory from verification to apply, over all disks of a point. */
const APPLY_RETAIN_BYTES = 128 << 20;
/** Largest write a streamed initial copy's frames are gathered into, and how many are in flight at most. */
const RUN_BYTES = 4 << 20;
const RUN_BUFFERS = 3;
export class ReplicaStore {
  readonly dir: string;
  private readonly keys: RelationshipKeys;
  private state: ReplicaState;
  private readonly undoFiles = new Map<string, UndoFile>();
  private readonly readers = new Map<string, ImageFile>();
  private readonly cipher: ImageCipher | undefined;
  private readonly pins = new Map<number, number>();
  private readonly lock = new AsyncMutex();
  private initial: InitialCheckpoint | undefined;
  /** Per disk: the streamed initial copy's next segment, when this process knows its range still holds zeroes. */
  readonly #untouched = new Map<string, number>();
  /** The write buffers a segment's frames are gathered into (RunWriter), reused. */
  #runBuffers: Buffer[] | undefined;
  private readonly counters: Mutable<ReplicaStats> = {
    pointsApplied: 0, logsApplied: 0, bytesApplied: 0, bytesReceived: 0,
    imageBytesWritten: 0, undoBytesWritten: 0, journalBytesWritten: 0,
  };

  private constructor(dir: string, keys: RelationshipKeys, state: ReplicaState, cipher: ImageCipher | undefined) {
    this.dir = dir;
    this.keys = keys;
    this.state = state;
    this.cipher = cipher;
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
    const store = new ReplicaStore(dir, keys, state, cipher);
    store.initial = await readJsonIfExists<InitialCheckpoint>(join(dir, INITIAL_FILE));
    if (fresh) await store.saveState(state);
    await store.encryptSeeds();
    await store.createImages();
    await store.recover();
    return store;
  }

  /** How the replica's images and undo lie on disk. */
  get atRest(): 'aes-256-xts' | 'none' {
    return this.cipher ? 'aes-256-xts' : 'none';
  }

  /** Path of a disk's image at the latest point. */
  diskPath(diskId: string): string {
    checkDiskId(diskId);
    return join(this.dir, `${diskId}.img`);
  }

  /** Sequence of the latest complete point (0 before the initial replication). */
  get applied(): number {
    return this.state.applied;
  }

  /** Retained recovery points, oldest first; the last is the latest. */
  points(): RecoveryPoint[] {
    return this.state.points.map(({ sequence, time, consistency, cutId }) => ({ sequence, time, consistency, cutId }));
  }

  retention(): RetentionPolicy {
    return this.state.retention;
  }

  stats(): ReplicaStats {
    return { ...this.counters };
  }

  // ------------------------------------------------------------------------------------ receiving

  private incomingPath(diskId: string, sequence: number): string {
    return join(this.dir, 'incoming', `${sequence}.${diskId}.hrl`);
  }

  private checkReceive(diskId: string, sequence: number): string | undefined {
    checkDiskId(diskId);
    if (!this.state.disks.some((d) => d.id === diskId)) {
      throw new TerminalError('invalid-argument', `replica ${this.dir} has no disk ${diskId}`);
    }
    if (!Number.isSafeInteger(sequence) || sequence < 1) throw new TerminalError('invalid-argument', `sequence ${sequence}`);
    // Already applied: acknowledging again is correct, storing again is not.
    if (sequence <= this.state.applied) return undefined;
    return this.incomingPath(diskId, sequence);
  }

  /**
   * Stores a sealed log durably in `incoming/` (file and directory fsynced); only after this
   * resolves may the sender be acknowledged. Returns false when the log was already applied or
   * already received (a duplicate: nothing changes). With `move`, the source file is renamed
   * instead of copied (same file system only).
   */
  async receive(diskId: string, sequence: number, srcPath: string, opts: { move?: boolean } = {}): Promise<boolean> {
    const dest = this.checkReceive(diskId, sequence);
    if (!dest || (await exists(dest))) return false;
    const tmp = `${dest}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      // A move across file systems (uploads kept apart from the storage path) is a copy.
      const moved = opts.move && (await rename(srcPath, tmp).then(() => true, (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EXDEV') throw e;
        return false;
      }));
      if (!moved) await copyFile(srcPath, tmp);
      const h = await open(tmp, 'r+');
      try {
        await h.sync();
        this.counters.bytesReceived += (await h.stat()).size;
      } finally {
        await h.close();
      }
      if (opts.move && !moved) await unlinkIfExists(srcPath);
    } catch (e) {
      await unlinkIfExists(tmp);
      throw await classifyDiskFull(e, this.dir, (await stat(srcPath).catch(() => ({ size: 0 }))).size);
    }
    await rename(tmp, dest);
    await fsyncDir(join(this.dir, 'incoming'));
    return true;
  }

  /** `receive` from a stream (the transport's request body). */
  async receiveStream(diskId: string, sequence: number, body: Readable | AsyncIterable<Buffer>): Promise<boolean> {
    const dest = this.checkReceive(diskId, sequence);
    if (!dest || (await exists(dest))) {
      for await (const _ of body) void _; // drain so the sender completes
      return false;
    }
    const tmp = `${dest}.${randomBytes(6).toString('hex')}.tmp`;
    const h = await open(tmp, 'w', 0o600);
    try {
      let at = 0;
      for await (const chunk of body) {
        await writeAll(h, chunk as Buffer, at);
        at += (chunk as Buffer).length;
      }
      await h.sync();
      this.counters.bytesReceived += at;
    } catch (e) {
      await h.close();
      await unlinkIfExists(tmp);
      throw e;
    }
    await h.close();
    await rename(tmp, dest);
    await fsyncDir(join(this.dir, 'incoming'));
    return true;
  }

  /**
   * Deletes every received log not applied yet, and any streamed initial copy in progress. A
   * resynchronisation compares against the latest applied point (or, before point 1, the image)
   * and starts the chain again from there, so nothing cut before it may become a point.
   */
  discardPending(): Promise<number> {
    return this.exclusive(async () => {
      let n = 0;
      for (const name of await readdir(join(this.dir, 'incoming'))) {
        const m = LOG_NAME.exec(name);
        if (m && Number(m[1]) > this.state.applied) {
          await unlinkIfExists(join(this.dir, 'incoming', name));
          n++;
        }
      }
      await fsyncDir(join(this.dir, 'incoming'));
      // A streamed initial copy in progress is abandoned too (its primary restarted and compares
      // against the image instead): it must never become point 1 under the resync's log.
      if (this.initial) {
        await this.saveInitial(undefined);
        this.#untouched.clear();
      }
      return n;
    });
  }

  /** The initial replication: every disk's `full` log of sequence 1, received and applied as one point. */
  async applyFull(logs: Readonly<Record<string, string>>): Promise<AppliedPoint[]> {
    for (const [diskId, path] of Object.entries(logs)) await this.receive(diskId, 1, path);
    return this.applyPending();
  }

  // ------------------------------------------------------------------------ streamed initial copy

  /** The streamed initial copy in progress, if any (its cut and each disk's segments done). */
  initialProgress(): InitialProgress | undefined {
    const c = this.initial;
    return c && { cutId: c.cutId, segments: { ...c.done } };
  }

  /**
   * Receives segment `index` of a streamed initial copy of `diskId` (initial-stream.ts): each frame
   * written at its offsets once it authenticates, the image fsynced and the checkpoint advanced
   * once the segment's MAC verified. Segment 0 of a new cut starts the copy again (the images
   * emptied); a segment already done is drained and acknowledged again; any other is refused. The
   * point becomes visible only when applyPending finds every segment of every disk in.
   */
  receiveInitialSegment(diskId: string, index: number, body: AsyncIterable<Buffer | Uint8Array>): Promise<InitialProgress> {
    return this.exclusive(async () => {
      checkDiskId(diskId);
      if (!this.state.disks.some((d) => d.id === diskId)) throw new TerminalError('not-found', `replica ${this.dir} has no disk ${diskId}`);
      if (this.state.applied > 0 || this.state.points.length) {
        throw new TerminalError('invalid-state', `replica ${this.dir} already holds point ${this.state.applied}: a streamed initial copy only fills an empty replica`);
      }
      const size = this.diskSize(diskId);
      const count = segmentCount(size);
      if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
        throw new TerminalError('invalid-argument', `disk ${diskId} has segments 0-${count - 1}, not ${index}`);
      }
      const { start, end } = segmentRange(index, size);
      const image = await ImageFile.open(this.diskPath(diskId), 'r+', this.cipher);
      let zeroes = false;
      let duplicate = false;
      let run: RunWriter | undefined;
      try {
        await image.grow(size);
        const summary = await receiveSegment(body, this.keys, {
          relationshipId: this.state.relationshipId, diskId, diskSize: size, start, end,
          checkHeader: async (h) => {
            let c = this.initial;
            if (index === 0 && c?.cutId !== h.cutId) c = await this.startInitial(h);
            if (!c || c.cutId !== h.cutId) {
              throw new TerminalError('invalid-state', `segment ${index} of ${diskId} belongs to cut ${h.cutId}, the copy in progress is ${c ? `of cut ${c.cutId}` : 'none'}: start again from segment 0`);
            }
            const done = c.done[diskId] ?? 0;
            if (index < done) duplicate = true;
            else if (index > done) throw new TerminalError('invalid-state', `disk ${diskId}: segment ${index} sent, segment ${done} expected next`);
            // Known untouched only when this process emptied the image or completed the segment
            // before: a retry, or the first segment after a restart, may land on a torn attempt's
            // writes and writes its zeroes too.
            zeroes = this.#untouched.get(diskId) !== index;
            this.#untouched.delete(diskId);
            this.#runBuffers ??= Array.from({ length: RUN_BUFFERS }, () => Buffer.allocUnsafeSlow(RUN_BYTES));
            run = new RunWriter(image, { zeroes, buffers: this.#runBuffers });
          },
        }, async (e) => {
          if (duplicate || !run) return;
          if ('data' in e) await run.data(e.offset, e.data);
          else await run.zero(e.offset, e.length);
        });
        this.counters.bytesReceived += summary.bytes;
        if (!duplicate) {
          await run!.drain();
          this.counters.imageBytesWritten += run!.written;
          await image.sync();
          const c = this.initial!;
          await this.saveInitial({ ...c, done: { ...c.done, [diskId]: index + 1 }, started: {} });
          this.#untouched.set(diskId, index + 1);
        }
      } catch (e) {
        throw await classifyDiskFull(e, this.dir, end - start);
      } finally {
        await run?.settle();
        await image.close();
      }
      return this.initialProgress()!;
    });
  }

  /** A new streamed initial copy: every image emptied (sparse zeroes), then its checkpoint. */
  private async startInitial(h: LogHeader): Promise<InitialCheckpoint> {
    for (const d of this.state.disks) {
      await truncate(this.diskPath(d.id), 0);
      const image = await ImageFile.open(this.diskPath(d.id), 'r+', this.cipher);
      try {
        await image.grow(d.size);
        await image.sync();
      } finally {
        await image.close();
      }
    }
    const c: InitialCheckpoint = { cutId: h.cutId, cutTime: h.cutTime, consistency: h.consistency, done: {}, started: {} };
    await this.saveInitial(c);
    for (const d of this.state.disks) this.#untouched.set(d.id, 0);
    return c;
  }

  private async saveInitial(c: InitialCheckpoint | undefined): Promise<void> {
    const path = join(this.dir, INITIAL_FILE);
    if (c) {
      const text = `${JSON.stringify(c)}\n`;
      await writeFileAtomic(path, text);
      this.counters.journalBytesWritten += text.length;
    } else if (await unlinkIfExists(path)) await fsyncDir(this.dir);
    this.initial = c;
  }

  /** Every segment of every disk in: the copy becomes point 1 (one journal write). */
  private async commitInitial(): Promise<AppliedPoint | undefined> {
    const c = this.initial;
    if (!c || this.state.applied > 0) return undefined;
    if (!this.state.disks.every((d) => (c.done[d.id] ?? 0) >= segmentCount(d.size))) return undefined;
    const point: StoredPoint = {
      sequence: 1, time: c.cutTime, consistency: c.consistency, cutId: c.cutId,
      sizes: Object.fromEntries(this.state.disks.map((d) => [d.id, d.size])), undo: null,
    };
    await this.saveState({ ...this.state, applied: 1, applying: null, points: [point] });
    await this.saveInitial(undefined);
    const bytes = this.state.disks.reduce((n, d) => n + d.size, 0);
    this.counters.pointsApplied++;
    this.counters.bytesApplied += bytes;
    return { sequence: 1, time: c.cutTime, consistency: c.consistency, cutId: c.cutId, bytes, records: 0 };
  }

  // ------------------------------------------------------------------------------------- applying

  /**
   * Applies every complete point waiting in `incoming/`, in sequence. A log failing verification
   * is deleted and RetryableError('integrity') thrown before anything of its point is written; a
   * gap or a log not based on the current point throws TerminalError('broken-chain').
   */
  applyPending(): Promise<AppliedPoint[]> {
    return this.exclusive(async () => {
      const done: AppliedPoint[] = [];
      // An apply that failed part way (I/O error) is finished before anything else: capturing
      // undo again from a half-written image would save the wrong content.
      await this.finishApplying();
      const initial = await this.commitInitial();
      if (initial) done.push(initial);
      for (;;) {
        const next = this.state.applied + 1;
        const pending = await this.listIncoming();
        const logs = pending.get(next);
        if (!logs || !this.state.disks.every((d) => logs.has(d.id))) {
          await this.checkGap(pending);
          return done;
        }
        const verified: VerifiedLog[] = [];
        for (const d of this.state.disks) verified.push(await this.verify(logs.get(d.id)!, d.id, next));
        done.push(await this.applyPoint(next, verified));
        // A streamed copy abandoned for a log (a resync after the primary restarted) is moot now.
        if (this.initial) {
          await this.saveInitial(undefined);
          this.#untouched.clear();
        }
        await this.pruneLocked(this.state.points[this.state.points.length - 1].time);
      }
    });
  }

  private async listIncoming(): Promise<Map<number, Map<string, string>>> {
    const out = new Map<number, Map<string, string>>();
    for (const name of await readdir(join(this.dir, 'incoming'))) {
      const m = LOG_NAME.exec(name);
      if (!m) continue;
      const seq = Number(m[1]);
      if (!out.has(seq)) out.set(seq, new Map());
      out.get(seq)!.set(m[2], join(this.dir, 'incoming', name));
    }
    return out;
  }

  /** Verifies a log; a damaged one is deleted (the sender must send it again) and rejected. */
  private async verify(path: string, diskId: string, sequence: number): Promise<VerifiedLog> {
    try {
      // Decoding while verifying spares a second pass over the file at apply.
      return await openLog(path, this.keys, { relationshipId: this.state.relationshipId, diskId, sequence },
        { retainBytes: Math.floor(APPLY_RETAIN_BYTES / this.state.disks.length) });
    } catch (e) {
      if (RetryableError.is(e) && e.code === 'integrity') {
        await unlinkIfExists(path);
        await fsyncDir(join(this.dir, 'incoming'));
      }
      throw e;
    }
  }

  /** Stalled on a missing point: is a later log built on a point we already passed? Then the chain is broken. */
  private async checkGap(pending: Map<number, Map<string, string>>): Promise<void> {
    const applied = this.state.applied;
    for (const [seq, logs] of [...pending].sort((a, b) => a[0] - b[0])) {
      if (seq <= applied + 1) continue;
      for (const [diskId, path] of logs) {
        let base: number;
        try {
          base = (await readLogHeader(path)).basePoint;
        } catch {
          continue; // unreadable headers are judged when their turn comes
        }
        if (base > applied) continue;
        const log = await this.verify(path, diskId, seq);
        if (log.header.basePoint <= applied) {
          throw new TerminalError('broken-chain',
            `replica ${this.dir}: log ${path} (sequence ${seq}) is based on point ${log.header.basePoint}, but point ${applied + 1} is missing after ${applied}: resynchronisation required`);
        }
      }
    }
  }

  private async applyPoint(sequence: number, logs: VerifiedLog[]): Promise<AppliedPoint> {
    const first = logs[0].header;
    for (const log of logs) {
      const h = log.header;
      if (h.basePoint !== this.state.applied) {
        throw new TerminalError('broken-chain',
          `replica ${this.dir}: log ${log.path} (sequence ${sequence}) is based on point ${h.basePoint}, the replica is at ${this.state.applied}: resynchronisation required`);
      }
      if (h.cutId !== first.cutId || h.cutTime !== first.cutTime || h.consistency !== first.consistency) {
        throw new TerminalError('broken-chain', `replica ${this.dir}: logs of sequence ${sequence} belong to different cuts (${first.cutId}, ${h.cutId})`);
      }
      const size = this.diskSize(h.diskId);
      if (h.diskSize < size) {
        throw new TerminalError('invalid-state', `log ${log.path}: disk ${h.diskId} shrank from ${size} to ${h.diskSize} bytes`);
      }
    }
    // Undo is only worth writing when a point older than this one may stay readable.
    const needUndo = this.state.applied > 0 && (this.state.retention.additional > 0 || this.pins.size > 0);
    // Images are created zeroed and nothing touched them before a first `full` point: skip writing
    // zeroes. A first point of kind `resync` lands on an existing replica copy and must write them.
    const fresh = this.state.applied === 0 && this.state.points.length === 0 && logs.every((l) => l.header.kind === 'full');
    // Refused before anything is written: a point never stops half applied for want of room.
    await ensureSpace(this.dir, await this.roomFor(logs, needUndo, fresh));
    let undo: Record<string, string[]> | null = null;
    let next = this.state.nextSegment;
    let points = this.state.points;
    if (needUndo) {
      // Points this apply makes obsolete are folded into it now, in the same journal write, and
      // whatever their undo already saved is not saved again (see foldObsolete).
      const fold = await this.foldObsolete(first.cutTime);
      points = fold.points;
      undo = {};
      for (const log of logs) {
        const diskId = log.header.diskId;
        const name = `${sequence}.${diskId}.${next++}.undo`;
        await this.captureUndo(log, name, fold.saved.get(diskId));
        undo[diskId] = [...(fold.carry[diskId] ?? []), name];
      }
      await fsyncDir(join(this.dir, 'undo'));
    }
    const point: StoredPoint = {
      sequence,
      time: first.cutTime,
      consistency: first.consistency,
      cutId: first.cutId,
      sizes: Object.fromEntries(this.state.disks.map((d) => [d.id, Math.max(d.size, logs.find((l) => l.header.diskId === d.id)!.header.diskSize)])),
      undo,
    };
    await this.saveState({ ...this.state, points, applying: point, nextSegment: next });
    return this.rollForward(point, logs, fresh);
  }

  /** Writes the point's logs onto the images and journals it as applied. Safe to repeat. */
  private async rollForward(point: StoredPoint, logs: VerifiedLog[], skipZeroes: boolean): Promise<AppliedPoint> {
    let bytes = 0;
    let records = 0;
    for (const log of logs) {
      const image = await ImageFile.open(this.diskPath(log.header.diskId), 'r+', this.cipher);
      try {
        await image.grow(log.header.diskSize);
        for await (const e of log.records()) {
          records++;
          if ('data' in e) {
            await image.write(e.offset, e.data);
            bytes += e.data.length;
            this.counters.imageBytesWritten += e.data.length;
            continue;
          }
          bytes += e.length;
          if (skipZeroes) continue;
          await image.writeZeroes(e.offset, e.length);
          this.counters.imageBytesWritten += e.length;
        }
        await image.sync();
      } finally {
        await image.close();
      }
    }
    const disks = this.state.disks.map((d) => ({ id: d.id, size: point.sizes[d.id] ?? d.size }));
    await this.saveState({
      ...this.state,
      disks,
      applied: point.sequence,
      applying: null,
      points: [...this.state.points, point],
    });
    for (const log of logs) await unlinkIfExists(log.path);
    await fsyncDir(join(this.dir, 'incoming'));
    this.counters.pointsApplied++;
    this.counters.logsApplied += logs.length;
    this.counters.bytesApplied += bytes;
    const { sequence, time, consistency, cutId } = point;
    return { sequence, time, consistency, cutId, bytes, records };
  }

  /**
   * At most the bytes applying `logs` adds to the file system: undo of every range they overwrite
   * (with `undo`), and the image blocks they write, no more than the images' unallocated part.
   */
  private async roomFor(logs: readonly VerifiedLog[], undo: boolean, skipZeroes: boolean): Promise<number> {
    let bytes = 0;
    for (const log of logs) {
      const size = this.diskSize(log.header.diskId);
      let written = 0;
      for (const r of log.index) {
        if (undo) bytes += Math.max(0, Math.min(r.offset + r.length, size) - r.offset);
        if (!r.zero || !skipZeroes) written += r.length;
      }
      const allocated = (await stat(this.diskPath(log.header.diskId))).blocks * 512;
      bytes += Math.min(written, Math.max(0, log.header.diskSize - allocated));
    }
    return bytes;
  }

  /**
   * The retained points older than the point being applied (at `time`) that the prune after it
   * will drop: every point after the newest one it keeps. They are dropped now instead, handing
   * their undo to the new point as prune would, and every range their undo saved is already the
   * content at that kept point, so the new point's undo skips it (a block overwritten again before
   * the next kept point is saved once). Doing both in the apply's own journal write keeps the
   * skipped ranges from ever being read for a dropped point, even across a crash.
   */
  private async foldObsolete(time: number): Promise<{ points: readonly StoredPoint[]; carry: Record<string, string[]>; saved: Map<string, RangeSet> }> {
    const pts = this.state.points;
    const none = { points: pts, carry: {}, saved: new Map<string, RangeSet>() };
    const keep = selectRetained([...pts, { sequence: Number.MAX_SAFE_INTEGER, time, consistency: 'crash', cutId: '' }], this.state.retention, time);
    for (const seq of this.pins.keys()) keep.add(seq);
    let k = pts.length - 1;
    while (k >= 0 && !keep.has(pts[k].sequence)) k--;
    const obsolete = pts.slice(k + 1);
    // Nothing kept below (no older point to serve), or an obsolete point without undo: fold nothing.
    if (k < 0 || !obsolete.length || obsolete.some((p) => p.undo === null)) return none;
    const carry: Record<string, string[]> = {};
    for (const p of obsolete) for (const [diskId, list] of Object.entries(p.undo!)) (carry[diskId] ??= []).push(...list);
    const saved = new Map<string, RangeSet>();
    for (const [diskId, list] of Object.entries(carry)) {
      const set = new RangeSet();
      for (const name of list) for (const e of (await this.undoFile(name)).entries) set.add(e.offset, e.offset + e.length);
      saved.set(diskId, set);
    }
    return { points: pts.slice(0, k + 1), carry, saved };
  }

  /**
   * Seals the old content of every range the log overwrites (clipped to the disk's current size),
   * except ranges in `skip`, whose content at the previous kept point another segment holds.
   */
  private async captureUndo(log: VerifiedLog, name: string, skip?: RangeSet): Promise<void> {
    // An encrypted image's undo holds whole units of ciphertext (see image-file.ts).
    const size = imageLength(this.diskSize(log.header.diskId), this.cipher);
    const u = this.cipher?.unit ?? 1;
    const ranges = new RangeSet();
    for (const r of log.index) {
      const start = r.offset - (r.offset % u);
      const end = Math.min(Math.ceil((r.offset + r.length) / u) * u, size);
      if (start >= end) continue;
      if (!skip) ranges.add(start, end);
      else for (const g of skip.gaps(start, end)) ranges.add(g.start, g.end);
    }
    const w = await UndoWriter.create(join(this.dir, 'undo', name));
    const image = await ImageFile.open(this.diskPath(log.header.diskId), 'r', this.cipher);
    try {
      for (const r of ranges.ranges()) {
        for (let at = r.start; at < r.end; at += UNDO_CHUNK) {
          const buf = Buffer.alloc(Math.min(UNDO_CHUNK, r.end - at));
          // Synchronous: thousands of 4 KiB page-cache reads cost more in thread-pool round trips than in reading.
          image.readRaw(buf, at);
          await w.add(at, buf);
        }
      }
      this.counters.undoBytesWritten += await w.finish();
    } catch (e) {
      await w.abort();
      throw e;
    } finally {
      await image.close();
    }
  }

  private diskSize(diskId: string): number {
    return this.state.disks.find((d) => d.id === diskId)?.size ?? 0;
  }

  // ------------------------------------------------------------------------------------- recovery

  private async createImages(): Promise<void> {
    let created = false;
    for (const d of this.state.disks) {
      const image = await ImageFile.open(this.diskPath(d.id), 'a+', this.cipher);
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
  private async encryptSeeds(): Promise<void> {
    if (!this.cipher) return;
    for (const d of this.state.disks) {
      if (!(await exists(seedPath(this.diskPath(d.id))))) continue;
      if (this.state.applied > 0) throw new TerminalError('invalid-state', `replica ${this.dir}: a plain seed ${seedPath(this.diskPath(d.id))} lies beside an image that has points applied`);
      try {
        await encryptSeed(this.diskPath(d.id), d.size, this.cipher);
      } catch (e) {
        throw await classifyDiskFull(e, this.dir, d.size);
      }
    }
  }

  /**
   * Rolls forward the point the journal says is being applied (a crash, or an apply that failed
   * part way): its undo is sealed and its logs are whole, so writing them again is exact.
   */
  private async finishApplying(): Promise<void> {
    const p = this.state.applying;
    if (!p) return;
    const logs: VerifiedLog[] = [];
    for (const d of this.state.disks) {
      const path = this.incomingPath(d.id, p.sequence);
      try {
        logs.push(await openLog(path, this.keys, { relationshipId: this.state.relationshipId, diskId: d.id, sequence: p.sequence }));
      } catch (e) {
        throw new TerminalError('invalid-state',
          `replica ${this.dir}: point ${p.sequence} was being applied but its log ${path} is unusable (${(e as Error).message}); the replica needs resynchronisation`,
          { cause: e });
      }
    }
    await this.rollForward(p, logs, false);
  }

  /** Rolls an interrupted apply forward, then removes what no journal entry refers to. */
  private async recover(): Promise<void> {
    await this.finishApplying();
    for (const name of await readdir(join(this.dir, 'incoming'))) {
      const m = LOG_NAME.exec(name);
      if (name.endsWith('.tmp') || (m && Number(m[1]) <= this.state.applied)) await unlinkIfExists(join(this.dir, 'incoming', name));
    }
    await this.removeUnreferenced();
    for (const name of await readdir(this.dir)) if (name.endsWith('.tmp')) await unlinkIfExists(join(this.dir, name));
  }

  private referenced(): Set<string> {
    const names = new Set<string>();
    for (const p of [...this.state.points, ...(this.state.applying ? [this.state.applying] : [])]) {
      for (const list of Object.values(p.undo ?? {})) for (const n of list) names.add(n);
    }
    return names;
  }

  private async removeUnreferenced(): Promise<void> {
    const keep = this.referenced();
    for (const name of await readdir(join(this.dir, 'undo'))) {
      if (keep.has(name)) continue;
      await this.undoFiles.get(name)?.close();
      this.undoFiles.delete(name);
      await unlinkIfExists(join(this.dir, 'undo', name));
    }
  }

  private async saveState(s: ReplicaState): Promise<void> {
    this.counters.journalBytesWritten += await writeState(this.dir, s);
    this.state = s;
  }

  // ------------------------------------------------------------------------------------ retention

  async setRetention(policy: RetentionPolicy): Promise<void> {
    checkRetention(policy);
    await this.exclusive(() => this.saveState({ ...this.state, retention: { ...policy } }));
  }

  /** Drops the points the retention policy no longer keeps at time `now` (default: the latest cut time). Returns their sequences. */
  prune(now?: number): Promise<number[]> {
    return this.exclusive(() => this.pruneLocked(now ?? this.state.points.at(-1)?.time ?? 0));
  }

  private async pruneLocked(now: number): Promise<number[]> {
    const pts = this.state.points;
    if (pts.length <= 1) return [];
    const keep = selectRetained(pts, this.state.retention, now);
    for (const seq of this.pins.keys()) keep.add(seq);
    // A point is readable only if every later point captured its undo.
    for (let i = pts.length - 1, readable = true; i >= 0; i--) {
      if (!readable && i < pts.length - 1) keep.delete(pts[i].sequence);
      if (pts[i].undo === null) readable = false;
    }
    keep.add(pts[pts.length - 1].sequence);
    // Nothing to drop, but a point whose undo grew long (every point of an hour folds into the
    // newest, one segment each: 120 an hour at 30 s, up to 3,600 when continuous) is merged anyway.
    const long = pts.some((p) => p.undo && Object.values(p.undo).some((list) => list.length > COMPACT_SEGMENTS));
    if (keep.size === pts.length && !long) return [];

    // Pruned points hand their undo segments to the next kept point (older segments first), so
    // every kept point's reads resolve exactly as before; only segments older than the oldest kept
    // point are dropped. No data is copied unless a point collects too many segments.
    const kept: StoredPoint[] = [];
    const pruned: number[] = [];
    let carry: Record<string, string[]> | null = {};
    let next = this.state.nextSegment;
    for (const p of pts) {
      const merged: Record<string, string[]> | null = carry && p.undo ? concatUndo(carry, p.undo) : null;
      if (!keep.has(p.sequence)) {
        pruned.push(p.sequence);
        carry = merged;
        continue;
      }
      carry = {};
      if (kept.length === 0) {
        kept.push({ ...p, undo: Object.fromEntries(this.state.disks.map((d) => [d.id, []])) });
        continue;
      }
      let undo = merged;
      if (undo) {
        for (const [diskId, list] of Object.entries(undo)) {
          if (list.length <= COMPACT_SEGMENTS) continue;
          const name = `${p.sequence}.${diskId}.${next++}.undo`;
          const sources = await Promise.all(list.map((n) => this.undoFile(n)));
          try {
            this.counters.undoBytesWritten += await mergeUndo(sources, join(this.dir, 'undo', name));
          } catch (e) {
            // A full disk skips the merge (a later prune merges): dropping points is what frees space.
            if (!isDiskFull(e)) throw e;
            continue;
          }
          undo = { ...undo, [diskId]: [name] };
        }
      }
      kept.push({ ...p, undo });
    }
    await fsyncDir(join(this.dir, 'undo'));
    await this.saveState({ ...this.state, points: kept, nextSegment: next });
    await this.removeUnreferenced();
    return pruned;
  }

  // ---------------------------------------------------------------------------------------- views

  private async undoFile(name: string): Promise<UndoFile> {
    let f = this.undoFiles.get(name);
    if (!f) {
      f = await UndoFile.open(join(this.dir, 'undo', name));
      this.undoFiles.set(name, f);
    }
    return f;
  }

  private async imageReader(diskId: string): Promise<ImageFile> {
    let image = this.readers.get(diskId);
    if (!image) {
      image = await ImageFile.open(this.diskPath(diskId), 'r', this.cipher);
      this.readers.set(diskId, image);
    }
    return image;
  }

  /**
   * The disk as its image holds it now, whatever point (none before the initial replication: the
   * image as placed or zeroes). Not pinned to a point: for reading before any point exists.
   */
  async openImage(diskId: string): Promise<BlockReader> {
    const size = this.diskSize(diskId);
    if (!this.state.disks.some((d) => d.id === diskId)) throw new TerminalError('not-found', `replica ${this.dir} has no disk ${diskId}`);
    const image = await ImageFile.open(this.diskPath(diskId), 'r', this.cipher);
    return {
      size,
      read: async (offset, length) => {
        if (offset < 0 || length < 0 || offset + length > size) throw new TerminalError('invalid-argument', `read ${offset}+${length} outside disk ${diskId} (${size} bytes)`);
        return image.read(offset, length);
      },
      close: () => image.close(),
    };
  }

  /** Undo segments a read of `diskId` at point `sequence` consults, oldest first. */
  private async segmentsFor(sequence: number, diskId: string): Promise<UndoFile[]> {
    const out: UndoFile[] = [];
    for (const p of this.state.points) {
      if (p.sequence <= sequence) continue;
      if (!p.undo) throw new TerminalError('not-found', `recovery point ${sequence} is no longer readable (point ${p.sequence} kept no undo)`);
      for (const name of p.undo[diskId] ?? []) out.push(await this.undoFile(name));
    }
    return out;
  }

  /**
   * A read-only view of a disk at a retained point, without copying the disk. The point stays
   * retained (pinned) until the view is closed; reads see the point even while newer points apply.
   */
  openView(sequence: number, diskId: string): Promise<BlockReader> {
    return this.exclusive(async () => {
      const p = this.state.points.find((x) => x.sequence === sequence);
      if (!p) throw new TerminalError('not-found', `replica ${this.dir}: recovery point ${sequence} is not retained`);
      const size = p.sizes[diskId];
      if (size === undefined) throw new TerminalError('not-found', `replica ${this.dir}: no disk ${diskId} at point ${sequence}`);
      await this.segmentsFor(sequence, diskId); // throws when the point is not readable
      this.pins.set(sequence, (this.pins.get(sequence) ?? 0) + 1);
      let closed = false;
      return {
        size,
        read: (offset: number, length: number) => {
          if (closed) return Promise.reject(new TerminalError('invalid-state', 'view is closed'));
          if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
            return Promise.reject(new TerminalError('invalid-argument', `read ${offset}+${length} outside disk ${diskId} (${size} bytes) at point ${sequence}`));
          }
          return this.exclusive(async () =>
            readAtPoint(await this.segmentsFor(sequence, diskId), await this.imageReader(diskId), offset, length));
        },
        close: async () => {
          if (closed) return;
          closed = true;
          const n = (this.pins.get(sequence) ?? 1) - 1;
          if (n > 0) this.pins.set(sequence, n);
          else this.pins.delete(sequence);
        },
      };
    });
  }

  /** Writes a disk at a retained point as a full raw (sparse) image; returns its size and SHA-256. */
  async exportView(sequence: number, diskId: string, destPath: string): Promise<{ size: number; sha256: string }> {
    const view = await this.openView(sequence, diskId);
    const tmp = `${destPath}.${randomBytes(6).toString('hex')}.tmp`;
    const hash = createHash('sha256');
    const fh = await open(tmp, 'w', 0o600);
    try {
      for (let at = 0; at < view.size; at += EXPORT_CHUNK) {
        const buf = await view.read(at, Math.min(EXPORT_CHUNK, view.size - at));
        hash.update(buf);
        if (!isZero(buf)) await writeAll(fh, buf, at);
      }
      await fh.truncate(view.size);
      await fh.sync();
    } catch (e) {
      await fh.close();
      await unlinkIfExists(tmp);
      throw e;
    } finally {
      await view.close();
    }
    await fh.close();
    await rename(tmp, destPath);
    return { size: view.size, sha256: hash.digest('hex') };
  }

  // ------------------------------------------------------------------------------------ lifecycle

  /** Releases open files; the store must not be used afterwards. */
  close(): Promise<void> {
    return this.exclusive(async () => {
      for (const f of this.undoFiles.values()) await f.close();
      this.undoFiles.clear();
      for (const image of this.readers.values()) await image.close();
      this.readers.clear();
    });
  }

  /** Deletes the replica: images, logs, undo and journal. */
  async removeAll(): Promise<void> {
    await this.close();
    for (const name of ['incoming', 'undo', STATE_FILE, ...this.state.disks.map((d) => `${d.id}.img`)]) {
      await rm(join(this.dir, name), { recursive: true, force: true });
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.run(fn);
  }
}

function concatUndo(older: Record<string, string[]>, newer: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const k of new Set([...Object.keys(older), ...Object.keys(newer)])) out[k] = [...(older[k] ?? []), ...(newer[k] ?? [])];
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    const h = await open(path, 'r');
    await h.close();
    return true;
  } catch {
    return false;
  }
}

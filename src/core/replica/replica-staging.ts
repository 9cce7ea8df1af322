// What a replica receives before it becomes a point. Sealed logs land durably in `incoming/`
// (one file per sequence and disk) and wait there to be applied; a streamed initial copy's
// segments are written into the images as they arrive, with a checkpoint (`initial.json`) of each
// disk's segments done, until every segment of every disk is in and the copy becomes point 1.
import { randomBytes } from 'node:crypto';
import { copyFile, open, readdir, rename, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { TerminalError } from '../../model/errors.ts';
import type { LogHeader } from '../types.ts';
import { fsyncDir, unlinkIfExists } from '../log/log-io.ts';
import { classifyDiskFull } from '../disk-full.ts';
import { ImageFile, RunWriter } from '../disk/image-file.ts';
import { receiveSegment, segmentCount, segmentRange, type InitialCheckpoint, type InitialProgress } from '../replication/initial-stream.ts';
import { readJsonIfExists, writeFileAtomic } from '../atomic-file.ts';
import { checkDiskId, exists, writeAll, type AppliedPoint, type ReplicaCore } from './replica-core.ts';
import type { StoredPoint } from './replica-state.ts';

/** A received log's name in `incoming/`: `<sequence>.<disk>.hrl`. */
export const LOG_NAME = /^(\d+)\.(.+)\.hrl$/;
/** The streamed initial copy's checkpoint (initial-stream.ts), while one is in progress. */
const INITIAL_FILE = 'initial.json';
/** Largest write a streamed initial copy's frames are gathered into, and how many are in flight at most. */
const RUN_BYTES = 4 << 20;
const RUN_BUFFERS = 3;

/** Where the log of `sequence` for `diskId` waits in the replica `dir` until applied. */
export function incomingPath(dir: string, diskId: string, sequence: number): string {
  return join(dir, 'incoming', `${sequence}.${diskId}.hrl`);
}

export class ReplicaStaging {
  readonly #core: ReplicaCore;
  #initial: InitialCheckpoint | undefined;
  /** Per disk: the streamed initial copy's next segment, when this process knows its range still holds zeroes. */
  readonly #untouched = new Map<string, number>();
  /** The write buffers a segment's frames are gathered into (RunWriter), reused. */
  #runBuffers: Buffer[] | undefined;

  private constructor(core: ReplicaCore, initial: InitialCheckpoint | undefined) {
    this.#core = core;
    this.#initial = initial;
  }

  /** The staging of the replica `core`, with the checkpoint of a streamed initial copy in progress. */
  static async open(core: ReplicaCore): Promise<ReplicaStaging> {
    return new ReplicaStaging(core, await readJsonIfExists<InitialCheckpoint>(join(core.dir, INITIAL_FILE)));
  }

  // ------------------------------------------------------------------------------------ sealed logs

  #checkReceive(diskId: string, sequence: number): string | undefined {
    const core = this.#core;
    checkDiskId(diskId);
    if (!core.hasDisk(diskId)) {
      throw new TerminalError('invalid-argument', `replica ${core.dir} has no disk ${diskId}`);
    }
    if (!Number.isSafeInteger(sequence) || sequence < 1) throw new TerminalError('invalid-argument', `sequence ${sequence}`);
    // Already applied: acknowledging again is correct, storing again is not.
    if (sequence <= core.state.applied) return undefined;
    return incomingPath(core.dir, diskId, sequence);
  }

  /** See ReplicaStore.receive. */
  async receive(diskId: string, sequence: number, srcPath: string, opts: { move?: boolean }): Promise<boolean> {
    const core = this.#core;
    const dest = this.#checkReceive(diskId, sequence);
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
        core.counters.bytesReceived += (await h.stat()).size;
      } finally {
        await h.close();
      }
      if (opts.move && !moved) await unlinkIfExists(srcPath);
    } catch (e) {
      await unlinkIfExists(tmp);
      throw await classifyDiskFull(e, core.dir, (await stat(srcPath).catch(() => ({ size: 0 }))).size);
    }
    await rename(tmp, dest);
    await fsyncDir(join(core.dir, 'incoming'));
    return true;
  }

  /** See ReplicaStore.receiveStream. */
  async receiveStream(diskId: string, sequence: number, body: Readable | AsyncIterable<Buffer>): Promise<boolean> {
    const core = this.#core;
    const dest = this.#checkReceive(diskId, sequence);
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
      core.counters.bytesReceived += at;
    } catch (e) {
      await h.close();
      await unlinkIfExists(tmp);
      throw e;
    }
    await h.close();
    await rename(tmp, dest);
    await fsyncDir(join(core.dir, 'incoming'));
    return true;
  }

  /** See ReplicaStore.discardPending; runs under the store's lock. */
  async discardPending(): Promise<number> {
    const core = this.#core;
    let n = 0;
    for (const name of await readdir(join(core.dir, 'incoming'))) {
      const m = LOG_NAME.exec(name);
      if (m && Number(m[1]) > core.state.applied) {
        await unlinkIfExists(join(core.dir, 'incoming', name));
        n++;
      }
    }
    await fsyncDir(join(core.dir, 'incoming'));
    // A streamed initial copy in progress is abandoned too (its primary restarted and compares
    // against the image instead): it must never become point 1 under the resync's log.
    await this.dropInitial();
    return n;
  }

  /** The logs waiting in `incoming/`: per sequence, each disk's log path. */
  async listIncoming(): Promise<Map<number, Map<string, string>>> {
    const dir = this.#core.dir;
    const out = new Map<number, Map<string, string>>();
    for (const name of await readdir(join(dir, 'incoming'))) {
      const m = LOG_NAME.exec(name);
      if (!m) continue;
      const seq = Number(m[1]);
      if (!out.has(seq)) out.set(seq, new Map());
      out.get(seq)!.set(m[2], join(dir, 'incoming', name));
    }
    return out;
  }

  // -------------------------------------------------------------------------- streamed initial copy

  /** The streamed initial copy in progress, if any (its cut and each disk's segments done). */
  initialProgress(): InitialProgress | undefined {
    const c = this.#initial;
    return c && { cutId: c.cutId, segments: { ...c.done } };
  }

  /** See ReplicaStore.receiveInitialSegment; runs under the store's lock. */
  async receiveInitialSegment(diskId: string, index: number, body: AsyncIterable<Buffer | Uint8Array>): Promise<InitialProgress> {
    const core = this.#core;
    const state = core.state;
    checkDiskId(diskId);
    if (!core.hasDisk(diskId)) throw new TerminalError('not-found', `replica ${core.dir} has no disk ${diskId}`);
    if (state.applied > 0 || state.points.length) {
      throw new TerminalError('invalid-state', `replica ${core.dir} already holds point ${state.applied}: a streamed initial copy only fills an empty replica`);
    }
    const size = core.diskSize(diskId);
    const count = segmentCount(size);
    if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
      throw new TerminalError('invalid-argument', `disk ${diskId} has segments 0-${count - 1}, not ${index}`);
    }
    const { start, end } = segmentRange(index, size);
    const image = await ImageFile.open(core.diskPath(diskId), 'r+', core.cipher);
    let zeroes = false;
    let duplicate = false;
    let run: RunWriter | undefined;
    try {
      await image.grow(size);
      const summary = await receiveSegment(body, core.keys, {
        relationshipId: state.relationshipId, diskId, diskSize: size, start, end,
        checkHeader: async (h) => {
          let c = this.#initial;
          if (index === 0 && c?.cutId !== h.cutId) c = await this.#startInitial(h);
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
      core.counters.bytesReceived += summary.bytes;
      if (!duplicate) {
        await run!.drain();
        core.counters.imageBytesWritten += run!.written;
        await image.sync();
        const c = this.#initial!;
        await this.#saveInitial({ ...c, done: { ...c.done, [diskId]: index + 1 }, started: {} });
        this.#untouched.set(diskId, index + 1);
      }
    } catch (e) {
      throw await classifyDiskFull(e, core.dir, end - start);
    } finally {
      await run?.settle();
      await image.close();
    }
    return this.initialProgress()!;
  }

  /** A new streamed initial copy: every image emptied (sparse zeroes), then its checkpoint. */
  async #startInitial(h: LogHeader): Promise<InitialCheckpoint> {
    const core = this.#core;
    for (const d of core.state.disks) {
      await truncate(core.diskPath(d.id), 0);
      const image = await ImageFile.open(core.diskPath(d.id), 'r+', core.cipher);
      try {
        await image.grow(d.size);
        await image.sync();
      } finally {
        await image.close();
      }
    }
    const c: InitialCheckpoint = { cutId: h.cutId, cutTime: h.cutTime, consistency: h.consistency, done: {}, started: {} };
    await this.#saveInitial(c);
    for (const d of core.state.disks) this.#untouched.set(d.id, 0);
    return c;
  }

  async #saveInitial(c: InitialCheckpoint | undefined): Promise<void> {
    const core = this.#core;
    const path = join(core.dir, INITIAL_FILE);
    if (c) {
      const text = `${JSON.stringify(c)}\n`;
      await writeFileAtomic(path, text);
      core.counters.journalBytesWritten += text.length;
    } else if (await unlinkIfExists(path)) await fsyncDir(core.dir);
    this.#initial = c;
  }

  /** Abandons a streamed initial copy in progress, if any (a log's point makes it moot). */
  async dropInitial(): Promise<void> {
    if (!this.#initial) return;
    await this.#saveInitial(undefined);
    this.#untouched.clear();
  }

  /** Every segment of every disk in: the copy becomes point 1 (one journal write). */
  async commitInitial(): Promise<AppliedPoint | undefined> {
    const core = this.#core;
    const state = core.state;
    const c = this.#initial;
    if (!c || state.applied > 0) return undefined;
    if (!state.disks.every((d) => (c.done[d.id] ?? 0) >= segmentCount(d.size))) return undefined;
    const point: StoredPoint = {
      sequence: 1, time: c.cutTime, consistency: c.consistency, cutId: c.cutId,
      sizes: Object.fromEntries(state.disks.map((d) => [d.id, d.size])), undo: null,
    };
    await core.saveState({ ...state, applied: 1, applying: null, points: [point] });
    await this.#saveInitial(undefined);
    const bytes = state.disks.reduce((n, d) => n + d.size, 0);
    core.counters.pointsApplied++;
    core.counters.bytesApplied += bytes;
    return { sequence: 1, time: c.cutTime, consistency: c.consistency, cutId: c.cutId, bytes, records: 0 };
  }
}

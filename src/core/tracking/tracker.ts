// Change tracking for one protected disk: every write marks 4 KiB blocks in a dirty bitmap, and a
// cut freezes that bitmap behind a point-in-time view kept by copy-before-write.
//
// Why a bitmap with copy-before-write rather than Hyper-V's write log (.hrl): a log writes every
// byte twice on the primary (disk + log, ~2x amplification) and grows with rewrites of the same
// block; a bitmap costs one bit per block and coalesces rewrites for free (last write wins). The
// price is paid only for blocks rewritten between a cut and the moment the shipper reads them:
// their old content is copied aside once (memory first, then a side file). Shippers read a cut
// within seconds, so amplification stays close to 1x (measured by writeStats()).
//
// Atomicity: writes and cuts take the same per-disk FIFO mutex, so a cut falls between two writes,
// never inside one; a multi-disk cut holds every disk's mutex at once (cut.ts).
import { basename, extname } from 'node:path';
import type { BlockDevice } from '../../model/block-device.ts';
import { TerminalError } from '../../model/errors.ts';
import { BLOCK_SIZE } from '../types.ts';
import { AsyncMutex } from '../async-mutex.ts';
import { CbwStore } from './cbw-store.ts';
import { DirtyBitmap } from './dirty-bitmap.ts';
import { FrozenDisk, type FrozenHost } from './frozen-disk.ts';
import { RawDisk } from '../disk/disk.ts';
import { loadTrackingState, saveTrackingState } from './tracking-state-file.ts';

const DEFAULT_CBW_MEMORY = 64 << 20;

/** `lost`: the previous tracker did not close cleanly, so changes may be missing: resynchronise. */
export type Continuity = 'intact' | 'lost';

export interface ClosableBlockDevice extends BlockDevice {
  close(): Promise<void>;
}

export interface TrackedDiskOptions {
  /** Disk id carried into logs. @default the file name without extension */
  readonly id?: string;
  /** Tracking state file. @default `<path>.cbt` */
  readonly statePath?: string;
  /** Copy-before-write side file, present only while a cut is open. @default `<path>.cbw` */
  readonly sidePath?: string;
  /** Bytes of copy-before-write data kept in memory before spilling to the side file. @default 64 MiB */
  readonly cbwMemoryLimit?: number;
}

export interface WrapOptions {
  readonly id: string;
  readonly statePath: string;
  readonly sidePath: string;
  readonly cbwMemoryLimit?: number;
}

/** Bytes the VM wrote versus bytes the primary stored for it. */
export interface WriteStats {
  /** Bytes written by the VM (write and writeZeroes lengths). */
  readonly vmBytes: number;
  /** Bytes written to the disk image on the VM's behalf (equal to vmBytes: no log). */
  readonly diskBytes: number;
  /** Bytes appended to copy-before-write side files. */
  readonly cbwSideFileBytes: number;
  /** Bytes of old block content copied aside before an overwrite (memory or side file). */
  readonly cbwCopiedBytes: number;
  /** Bytes written to the tracking state file. */
  readonly stateFileBytes: number;
  /** (diskBytes + cbwSideFileBytes + stateFileBytes) / vmBytes; 0 before any write. */
  readonly amplification: number;
}

export interface FreezeOptions {
  readonly cutId: string;
  /** Milliseconds since the epoch: the recovery point's time. */
  readonly time: number;
  /** Freeze every block, not only dirty ones (initial copy, export to media). @default false */
  readonly full?: boolean;
}

interface Freeze {
  readonly cutId: string;
  readonly frozen: DirtyBitmap;
  /** Frozen blocks whose cut content is still only on the disk (not yet read nor copied aside). */
  readonly need: DirtyBitmap;
  readonly cbw: CbwStore;
}

let nextOrder = 0;

export class TrackedDisk implements BlockDevice {
  readonly id: string;
  readonly size: number;
  readonly continuity: Continuity;
  /** Why continuity was lost (for events); undefined when intact. */
  readonly continuityReason: string | undefined;
  readonly #device: ClosableBlockDevice;
  readonly #statePath: string;
  readonly #sidePath: string;
  readonly #cbwLimit: number;
  readonly #mutex = new AsyncMutex();
  /** Global lock order, so concurrent multi-disk cuts cannot deadlock. */
  readonly #order = nextOrder++;
  #active: DirtyBitmap;
  #freeze: Freeze | undefined;
  #closed = false;
  #vmBytes = 0;
  #stateBytes = 0;
  #sideBytesDone = 0;
  #cbwCopiedBytes = 0;

  private constructor(device: ClosableBlockDevice, opts: WrapOptions, active: DirtyBitmap, continuity: Continuity, why: string | undefined) {
    this.#device = device;
    this.id = opts.id;
    this.size = device.size;
    this.#statePath = opts.statePath;
    this.#sidePath = opts.sidePath;
    this.#cbwLimit = opts.cbwMemoryLimit ?? DEFAULT_CBW_MEMORY;
    this.#active = active;
    this.continuity = continuity;
    this.continuityReason = why;
  }

  /** Opens a raw image and its tracking state; see `continuity`. */
  static async open(path: string, opts: TrackedDiskOptions = {}): Promise<TrackedDisk> {
    const device = await RawDisk.open(path);
    return TrackedDisk.#wrapOwned(device, path, opts);
  }

  /** Creates a blank sparse image; its (empty) tracking starts intact. */
  static async create(path: string, size: number, opts: TrackedDiskOptions = {}): Promise<TrackedDisk> {
    const device = await RawDisk.create(path, size);
    try {
      await saveTrackingState(opts.statePath ?? `${path}.cbt`, size, BLOCK_SIZE, new DirtyBitmap(Math.ceil(size / BLOCK_SIZE)));
    } catch (e) {
      await device.close();
      throw e;
    }
    return TrackedDisk.#wrapOwned(device, path, opts);
  }

  /**
   * Tracks any block device. Marks the state file dirty before returning, so a crash from here on
   * reads back as continuity `lost`. With continuity lost every block starts dirty.
   */
  static async wrap(device: ClosableBlockDevice, opts: WrapOptions): Promise<TrackedDisk> {
    const blocks = Math.ceil(device.size / BLOCK_SIZE);
    const loaded = await loadTrackingState(opts.statePath, device.size, BLOCK_SIZE);
    const written = await saveTrackingState(opts.statePath, device.size, BLOCK_SIZE);
    const disk =
      loaded.continuity === 'intact'
        ? new TrackedDisk(device, opts, loaded.bitmap, 'intact', undefined)
        : new TrackedDisk(device, opts, DirtyBitmap.full(blocks), 'lost', loaded.why);
    disk.#stateBytes += written;
    return disk;
  }

  static async #wrapOwned(device: RawDisk, path: string, opts: TrackedDiskOptions): Promise<TrackedDisk> {
    try {
      return await TrackedDisk.wrap(device, {
        id: opts.id ?? basename(path, extname(path)),
        statePath: opts.statePath ?? `${path}.cbt`,
        sidePath: opts.sidePath ?? `${path}.cbw`,
        cbwMemoryLimit: opts.cbwMemoryLimit,
      });
    } catch (e) {
      await device.close();
      throw e;
    }
  }

  /**
   * Freezes several disks at one instant: takes every disk's write mutex (in global order), checks
   * them all, then swaps in fresh bitmaps. A refusal changes nothing. Use cutVm / cutGroup.
   */
  static async freezeTogether(disks: readonly TrackedDisk[], opts: FreezeOptions): Promise<FrozenDisk[]> {
    if (new Set(disks).size !== disks.length) {
      throw new TerminalError('invalid-argument', `cut ${opts.cutId}: a disk is listed twice`);
    }
    const ordered = [...disks].sort((a, b) => a.#order - b.#order);
    const releases: (() => void)[] = [];
    try {
      for (const d of ordered) releases.push(await d.#mutex.lock());
      for (const d of disks) {
        if (d.#closed) throw new TerminalError('invalid-state', `cannot cut ${opts.cutId}: disk ${d.id} is closed`);
        if (d.#freeze) {
          throw new TerminalError('invalid-state', `cannot cut ${opts.cutId}: disk ${d.id} still has cut ${d.#freeze.cutId} open (release or abandon it first)`);
        }
      }
      return disks.map((d) => d.#freezeLocked(opts));
    } finally {
      for (const r of releases) r();
    }
  }

  #freezeLocked(opts: FreezeOptions): FrozenDisk {
    const blocks = this.#active.blocks;
    const frozen = opts.full ? DirtyBitmap.full(blocks) : this.#active;
    this.#active = new DirtyBitmap(blocks);
    const f: Freeze = { cutId: opts.cutId, frozen, need: frozen.clone(), cbw: new CbwStore(this.#sidePath, this.#cbwLimit) };
    this.#freeze = f;
    const host: FrozenHost = {
      readRun: (start, count) => this.#readRun(f, start, count),
      finish: (requeue) => this.#finish(f, requeue),
    };
    const view = new FrozenDisk(host, frozen, { diskId: this.id, size: this.size, cutId: opts.cutId, time: opts.time, kind: opts.full ? 'full' : 'delta' });
    this.#view = view;
    return view;
  }

  read(offset: number, length: number): Promise<Buffer> {
    if (this.#closed) return Promise.reject(this.#closedError('read'));
    return this.#device.read(offset, length);
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.#mutate('write', offset, data.length, () => this.#device.write(offset, data));
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#mutate('writeZeroes', offset, length, () => this.#device.writeZeroes(offset, length));
  }

  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError('flush'));
    // No mutex: fdatasync covers every write already acknowledged, and must not stall new ones.
    return this.#device.flush();
  }

  /** Bytes not yet shipped: blocks dirty since the last cut plus those of an unreleased cut. */
  pendingBytes(): number {
    const n = this.#freeze ? this.#active.unionCount(this.#freeze.frozen) : this.#active.count;
    return Math.min(n * BLOCK_SIZE, this.size);
  }

  /** Blocks dirty since the last cut. */
  dirtyBlocks(): number {
    return this.#active.count;
  }

  /** Every block is shipped at the next cut (resync fallback, replica lost). */
  markAllDirty(): Promise<void> {
    return this.#mutex.run(() => this.#active.setRange(0, this.#active.blocks));
  }

  /** Forget changes since the last cut: only when the replica is known to equal this disk. */
  clearDirty(): Promise<void> {
    return this.#mutex.run(() => this.#active.clearAll());
  }

  /** The open cut's view, if a cut was taken and not yet released or abandoned. */
  get frozen(): FrozenDisk | undefined {
    return this.#freeze ? this.#view : undefined;
  }
  #view: FrozenDisk | undefined;

  writeStats(): WriteStats {
    const side = this.#sideBytesDone + (this.#freeze?.cbw.sideBytesWritten ?? 0);
    const stored = this.#vmBytes + side + this.#stateBytes;
    return {
      vmBytes: this.#vmBytes,
      diskBytes: this.#vmBytes,
      cbwSideFileBytes: side,
      cbwCopiedBytes: this.#cbwCopiedBytes,
      stateFileBytes: this.#stateBytes,
      amplification: this.#vmBytes === 0 ? 0 : stored / this.#vmBytes,
    };
  }

  /**
   * Orderly stop: an open cut's blocks return to the dirty set (they may not have shipped), the
   * disk is flushed, then the bitmap is saved with the clean flag. Idempotent.
   */
  close(): Promise<void> {
    return this.#mutex.run(async () => {
      if (this.#closed) return;
      this.#closed = true;
      const f = this.#freeze;
      if (f) {
        this.#active.orWith(f.frozen);
        await this.#dropFreeze(f);
      }
      try {
        await this.#device.flush();
        this.#stateBytes += await saveTrackingState(this.#statePath, this.size, BLOCK_SIZE, this.#active);
      } finally {
        await this.#device.close();
      }
    });
  }

  #mutate(op: string, offset: number, length: number, apply: () => Promise<void>): Promise<void> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      return Promise.reject(
        new TerminalError('invalid-argument', `disk ${this.id}: ${op} of ${length} bytes at ${offset} is outside the disk (size ${this.size})`),
      );
    }
    return this.#mutex.run(async () => {
      if (this.#closed) throw this.#closedError(op);
      if (length === 0) return;
      const first = Math.floor(offset / BLOCK_SIZE);
      const end = Math.ceil((offset + length) / BLOCK_SIZE);
      const f = this.#freeze;
      if (f && f.need.count > 0) await this.#preserve(f, first, end);
      // Marked before the write: a failed write may still have changed some blocks.
      this.#active.setRange(first, end);
      await apply();
      this.#vmBytes += length;
    });
  }

  /** Copy-before-write: keeps the cut's content of frozen blocks in [first, end) not yet read. */
  async #preserve(f: Freeze, first: number, end: number): Promise<void> {
    let lo = -1;
    let hi = -1;
    let needed = 0;
    for (let b = first; b < end; b++) {
      if (f.need.has(b)) {
        if (lo < 0) lo = b;
        hi = b;
        needed++;
      }
    }
    if (lo < 0) return;
    const at = lo * BLOCK_SIZE;
    const old = await this.#device.read(at, Math.min((hi + 1) * BLOCK_SIZE, this.size) - at);
    const shared = needed === hi - lo + 1;
    for (let b = lo; b <= hi; b++) {
      if (!f.need.has(b)) continue;
      const slice = old.subarray((b - lo) * BLOCK_SIZE, Math.min((b - lo + 1) * BLOCK_SIZE, old.length));
      const copy = shared ? slice : Buffer.from(slice);
      await f.cbw.put(b, copy);
      this.#cbwCopiedBytes += copy.length;
      f.need.clear(b);
    }
  }

  #readRun(f: Freeze, start: number, count: number): Promise<Buffer> {
    return this.#mutex.run(async () => {
      if (this.#freeze !== f) throw new TerminalError('invalid-state', `disk ${this.id}: the cut was released, abandoned or the disk closed`);
      const at = start * BLOCK_SIZE;
      const buf = await this.#device.read(at, Math.min(count * BLOCK_SIZE, this.size - at));
      for (let b = start; b < start + count; b++) {
        if (f.cbw.has(b)) (await f.cbw.take(b)).copy(buf, (b - start) * BLOCK_SIZE);
        else f.need.clear(b);
      }
      return buf;
    });
  }

  #finish(f: Freeze, requeue: boolean): Promise<void> {
    return this.#mutex.run(async () => {
      if (this.#freeze !== f) return;
      if (requeue) this.#active.orWith(f.frozen);
      await this.#dropFreeze(f);
    });
  }

  async #dropFreeze(f: Freeze): Promise<void> {
    this.#freeze = undefined;
    this.#view = undefined;
    this.#sideBytesDone += f.cbw.sideBytesWritten;
    await f.cbw.dispose();
  }

  #closedError(op: string): TerminalError {
    return new TerminalError('invalid-state', `disk ${this.id}: ${op} after close`);
  }
}

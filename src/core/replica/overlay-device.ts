// A throw-away overlay on a read-only recovery point: reads come from the point-in-time view until
// a block is written, writes land in a sparse overlay file. Test failover and uncommitted failover
// VMs run on it, so the replica's chain is never touched and nothing is copied up front.
import { open, type FileHandle } from 'node:fs/promises';
import type { BlockDevice } from '../../model/block-device.ts';
import { TerminalError } from '../../model/errors.ts';
import { readJsonIfExists, writeJsonAtomic } from '../atomic-file.ts';
import { DirtyBitmap } from '../tracking/dirty-bitmap.ts';
import { BLOCK_SIZE } from '../types.ts';

export interface PointReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

export class OverlayDevice implements BlockDevice {
  readonly size: number;
  readonly #base: PointReader;
  readonly #fh: FileHandle;
  readonly #mapPath: string;
  readonly #map: DirtyBitmap;
  #closed = false;

  private constructor(base: PointReader, fh: FileHandle, mapPath: string, map: DirtyBitmap) {
    this.size = base.size;
    this.#base = base;
    this.#fh = fh;
    this.#mapPath = mapPath;
    this.#map = map;
  }

  /**
   * Opens (or creates) the overlay `path` over `base`. The block map lives in `path.map` and is
   * saved on flush and close: like a disk cache, writes not yet flushed may be lost in a crash.
   */
  static async open(base: PointReader, path: string): Promise<OverlayDevice> {
    const blocks = Math.ceil(base.size / BLOCK_SIZE);
    const saved = await readJsonIfExists<{ size: number; map: string }>(`${path}.map`);
    const map = saved && saved.size === base.size ? new DirtyBitmap(blocks, Buffer.from(saved.map, 'base64')) : new DirtyBitmap(blocks);
    const fh = await open(path, saved ? 'r+' : 'w+', 0o600);
    await fh.truncate(base.size);
    return new OverlayDevice(base, fh, `${path}.map`, map);
  }

  /** Blocks written since the overlay was created. */
  get writtenBlocks(): number {
    return this.#map.count;
  }

  #check(offset: number, length: number): void {
    if (this.#closed) throw new TerminalError('invalid-state', 'overlay device is closed');
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new TerminalError('invalid-argument', `range ${offset}+${length} outside the ${this.size}-byte disk`);
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.#check(offset, length);
    const out = Buffer.alloc(length);
    let at = offset;
    while (at < offset + length) {
      const block = Math.floor(at / BLOCK_SIZE);
      const inOverlay = this.#map.has(block);
      // Extend the span over following blocks with the same source.
      let end = Math.min(offset + length, (block + 1) * BLOCK_SIZE);
      while (end < offset + length && this.#map.has(Math.floor(end / BLOCK_SIZE)) === inOverlay) {
        end = Math.min(offset + length, end + BLOCK_SIZE);
      }
      const part = inOverlay ? await readFull(this.#fh, at, end - at) : await this.#base.read(at, end - at);
      part.copy(out, at - offset);
      at = end;
    }
    return out;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.#check(offset, data.length);
    const first = Math.floor(offset / BLOCK_SIZE);
    const last = Math.floor((offset + data.length - 1) / BLOCK_SIZE);
    if (data.length === 0) return;
    // Partial edge blocks not in the overlay yet are filled from the point first.
    for (const b of new Set([first, last])) {
      const start = b * BLOCK_SIZE;
      const end = Math.min(this.size, start + BLOCK_SIZE);
      const covered = offset <= start && offset + data.length >= end;
      if (!covered && !this.#map.has(b)) {
        await writeFull(this.#fh, await this.#base.read(start, end - start), start);
        this.#map.set(b);
      }
    }
    await writeFull(this.#fh, data, offset);
    this.#map.setRange(first, last + 1);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    for (let at = offset; at < offset + length; at += 1 << 20) await this.write(at, Buffer.alloc(Math.min(1 << 20, offset + length - at)));
  }

  async flush(): Promise<void> {
    await this.#fh.datasync();
    await writeJsonAtomic(this.#mapPath, { size: this.size, map: Buffer.from(this.#map.bits).toString('base64') });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.#closed = true;
    await this.#fh.close();
    await this.#base.close();
  }
}

async function readFull(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf;
}

async function writeFull(fh: FileHandle, data: Buffer, offset: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
    done += bytesWritten;
  }
}

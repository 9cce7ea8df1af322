// Reads a disk as it was at an older recovery point without copying it: a byte's content at point
// k is in the oldest undo segment (of the points after k) that covers it, else in the latest image.
// ReplicaViews opens such views of a replica (pinning their point), the image as it stands, and
// exports a point as a full raw image.
import { createHash, randomBytes } from 'node:crypto';
import { open, rename } from 'node:fs/promises';
import { TerminalError } from '../../model/errors.ts';
import { ImageFile } from '../disk/image-file.ts';
import { unlinkIfExists } from '../log/log-io.ts';
import { isZero, type UndoFile } from './replica-undo.ts';
import { RangeSet } from './replica-ranges.ts';
import { writeAll, type ReplicaCore } from './replica-core.ts';

const EXPORT_CHUNK = 4 << 20;

/** A read-only disk at one point in time. */
export interface BlockReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * `segments` must be ordered oldest first (ascending point, then segment order within a point).
 * An encrypted image's undo holds whole units of its ciphertext, so the stored bytes of the whole
 * units around the read are gathered first and decrypted once.
 */
export async function readAtPoint(
  segments: readonly UndoFile[],
  image: ImageFile,
  offset: number,
  length: number,
): Promise<Buffer> {
  const u = image.unit;
  const a = offset - (offset % u);
  const b = Math.ceil((offset + length) / u) * u;
  const raw = await gather(segments, image, a, b - a);
  if (!image.cipher) return raw;
  image.cipher.decrypt(raw, a);
  return a === offset && b - a === length ? raw : raw.subarray(offset - a, offset - a + length);
}

async function gather(segments: readonly UndoFile[], image: ImageFile, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  const end = offset + length;
  const covered = new RangeSet();
  for (const seg of segments) {
    if (covered.size === 1 && covered.gaps(offset, end).length === 0) break;
    for (let i = seg.firstEndingAfter(offset); i < seg.entries.length; i++) {
      const e = seg.entries[i];
      if (e.offset >= end) break;
      const s = Math.max(offset, e.offset);
      const t = Math.min(end, e.offset + e.length);
      for (const g of covered.gaps(s, t)) await seg.readInto(e, g.start, g.end - g.start, out, g.start - offset);
      covered.add(s, t);
    }
  }
  for (const g of covered.gaps(offset, end)) await image.readRawAsync(out, g.start, g.start - offset, g.end - g.start);
  return out;
}

/** The views of one replica; `exclusive` is the store's lock, which applies and prunes hold too. */
export class ReplicaViews {
  readonly #core: ReplicaCore;
  readonly #exclusive: <T>(fn: () => Promise<T>) => Promise<T>;
  /** The latest images, opened once for reading. */
  readonly #readers = new Map<string, ImageFile>();

  constructor(core: ReplicaCore, exclusive: <T>(fn: () => Promise<T>) => Promise<T>) {
    this.#core = core;
    this.#exclusive = exclusive;
  }

  /** See ReplicaStore.openImage. */
  async openImage(diskId: string): Promise<BlockReader> {
    const core = this.#core;
    const size = core.diskSize(diskId);
    if (!core.hasDisk(diskId)) throw new TerminalError('not-found', `replica ${core.dir} has no disk ${diskId}`);
    const image = await ImageFile.open(core.diskPath(diskId), 'r', core.cipher);
    return {
      size,
      read: async (offset, length) => {
        if (offset < 0 || length < 0 || offset + length > size) throw new TerminalError('invalid-argument', `read ${offset}+${length} outside disk ${diskId} (${size} bytes)`);
        return image.read(offset, length);
      },
      close: () => image.close(),
    };
  }

  /** See ReplicaStore.openView. */
  openView(sequence: number, diskId: string): Promise<BlockReader> {
    const core = this.#core;
    return this.#exclusive(async () => {
      const p = core.state.points.find((x) => x.sequence === sequence);
      if (!p) throw new TerminalError('not-found', `replica ${core.dir}: recovery point ${sequence} is not retained`);
      const size = p.sizes[diskId];
      if (size === undefined) throw new TerminalError('not-found', `replica ${core.dir}: no disk ${diskId} at point ${sequence}`);
      await this.#segmentsFor(sequence, diskId); // throws when the point is not readable
      core.pins.set(sequence, (core.pins.get(sequence) ?? 0) + 1);
      let closed = false;
      return {
        size,
        read: (offset: number, length: number) => {
          if (closed) return Promise.reject(new TerminalError('invalid-state', 'view is closed'));
          if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
            return Promise.reject(new TerminalError('invalid-argument', `read ${offset}+${length} outside disk ${diskId} (${size} bytes) at point ${sequence}`));
          }
          return this.#exclusive(async () =>
            readAtPoint(await this.#segmentsFor(sequence, diskId), await this.#imageReader(diskId), offset, length));
        },
        close: async () => {
          if (closed) return;
          closed = true;
          const n = (core.pins.get(sequence) ?? 1) - 1;
          if (n > 0) core.pins.set(sequence, n);
          else core.pins.delete(sequence);
        },
      };
    });
  }

  /** See ReplicaStore.exportView. */
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

  /** Closes the images opened for reading (under the store's lock). */
  async close(): Promise<void> {
    for (const image of this.#readers.values()) await image.close();
    this.#readers.clear();
  }

  /** Undo segments a read of `diskId` at point `sequence` consults, oldest first. */
  async #segmentsFor(sequence: number, diskId: string): Promise<UndoFile[]> {
    const out: UndoFile[] = [];
    for (const p of this.#core.state.points) {
      if (p.sequence <= sequence) continue;
      if (!p.undo) throw new TerminalError('not-found', `recovery point ${sequence} is no longer readable (point ${p.sequence} kept no undo)`);
      for (const name of p.undo[diskId] ?? []) out.push(await this.#core.undoFile(name));
    }
    return out;
  }

  async #imageReader(diskId: string): Promise<ImageFile> {
    let image = this.#readers.get(diskId);
    if (!image) {
      image = await ImageFile.open(this.#core.diskPath(diskId), 'r', this.#core.cipher);
      this.#readers.set(diskId, image);
    }
    return image;
  }
}

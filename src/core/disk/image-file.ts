// A replica image file, plain or encrypted at rest (at-rest.ts). Callers speak plaintext at any
// offset; an encrypted image is read and written in whole 4 KiB units (a partial unit is read,
// decrypted, patched and encrypted again), and its file is as long as its size rounded up to one.
// Undo capture and point-in-time views take the stored bytes as they are (`readRaw`): each unit's
// ciphertext stays valid wherever the same offset is, so they never decrypt to copy.
import { readSync, writeSync } from 'node:fs';
import { open, rename, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { ImageCipher } from './at-rest.ts';
import { dirname } from 'node:path';
import { fsyncDir, unlinkIfExists } from '../log/log-io.ts';
import { isZero } from '../replica/replica-undo.ts';

/** Bytes written synchronously before the event loop gets a turn. */
const YIELD_EVERY = 32 << 20;
const ZERO_CHUNK = Buffer.alloc(1 << 20);
const COPY_CHUNK = 4 << 20;

/** An image's file length for a disk of `size` bytes. */
export function imageLength(size: number, cipher: ImageCipher | undefined): number {
  return cipher ? Math.ceil(size / cipher.unit) * cipher.unit : size;
}

/**
 * Positional I/O on an image, synchronous: a 4 KiB pwrite into the page cache costs a few
 * microseconds, a thread-pool round trip for it several times that, and a log of random 4 KiB
 * writes is tens of thousands of them. The event loop gets a turn every YIELD_EVERY bytes.
 */
export class ImageFile {
  readonly path: string;
  readonly cipher: ImageCipher | undefined;
  /** Alignment of stored bytes: the cipher's unit, or 1 for a plain image. */
  readonly unit: number;
  readonly #fh: FileHandle;
  #sinceYield = 0;
  /** Reused for encrypting writes, so a log's records do not each allocate. */
  #scratch = Buffer.alloc(0);

  private constructor(path: string, fh: FileHandle, cipher: ImageCipher | undefined) {
    this.path = path;
    this.#fh = fh;
    this.cipher = cipher;
    this.unit = cipher?.unit ?? 1;
  }

  static async open(path: string, mode: 'r' | 'r+' | 'a+', cipher: ImageCipher | undefined): Promise<ImageFile> {
    return new ImageFile(path, await open(path, mode), cipher);
  }

  /** The stored bytes of [offset, offset + buf.length) into buf (zeroes past the end of the file). */
  readRaw(buf: Buffer, offset: number): void {
    let got = 0;
    while (got < buf.length) {
      const n = readSync(this.#fh.fd, buf, got, buf.length - got, offset + got);
      if (n === 0) {
        buf.fill(0, got);
        return;
      }
      got += n;
    }
  }

  /** `readRaw` through the thread pool (views serve guests; a cold read must not stall the loop). */
  async readRawAsync(buf: Buffer, offset: number, at = 0, length = buf.length - at): Promise<void> {
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.#fh.read(buf, at + got, length - got, offset + got);
      if (bytesRead === 0) {
        buf.fill(0, at + got, at + length);
        return;
      }
      got += bytesRead;
    }
  }

  /** Plaintext of [offset, offset + length). */
  read(offset: number, length: number): Buffer {
    const [a, b] = this.#around(offset, length);
    const buf = Buffer.allocUnsafe(b - a);
    this.readRaw(buf, a);
    this.cipher?.decrypt(buf, a);
    return a === offset && b - a === length ? buf : buf.subarray(offset - a, offset - a + length);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (!this.cipher) return this.#put(data, offset);
    const [a, b] = this.#around(offset, data.length);
    if (this.#scratch.length < b - a) this.#scratch = Buffer.allocUnsafe(Math.max(b - a, 1 << 20));
    const buf = this.#scratch.subarray(0, b - a);
    if (a !== offset || b !== offset + data.length) {
      // Read, decrypt, patch: the units around the write keep their other bytes.
      this.readRaw(buf, a);
      this.cipher.decrypt(buf, a);
    }
    data.copy(buf, offset - a);
    this.cipher.encrypt(buf, a);
    return this.#put(buf, a);
  }

  /**
   * `write` of a buffer the caller gives up: an encrypted image encrypts it in place when it is
   * whole units (no copy); the caller must not read it afterwards.
   */
  async writeOwned(offset: number, data: Buffer): Promise<void> {
    if (!this.cipher || offset % this.unit !== 0 || data.length % this.unit !== 0) return this.write(offset, data);
    this.cipher.encrypt(data, offset);
    return this.#put(data, offset);
  }

  /**
   * `writeOwned` through the thread pool: the buffer (whole units, encrypted in place on an
   * encrypted image) is written while this thread goes on; resolves once it is written.
   */
  async writeOwnedAsync(offset: number, data: Buffer): Promise<void> {
    if (this.cipher) {
      if (offset % this.unit !== 0 || data.length % this.unit !== 0) return this.write(offset, data);
      this.cipher.encrypt(data, offset);
    }
    let done = 0;
    while (done < data.length) done += (await this.#fh.write(data, done, data.length - done, offset + done)).bytesWritten;
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    const end = offset + length;
    // Whole units of zeroes are stored as zeroes; only partial units at the edges are rewritten.
    const u = this.unit;
    const first = Math.min(end, Math.ceil(offset / u) * u);
    const last = Math.max(first, end - (end % u));
    if (first > offset) await this.write(offset, ZERO_CHUNK.subarray(0, first - offset));
    for (let at = first; at < last; at += ZERO_CHUNK.length) await this.#put(ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, last - at)), at);
    if (end > last) await this.write(last, ZERO_CHUNK.subarray(0, end - last));
  }

  async size(): Promise<number> {
    return (await this.#fh.stat()).size;
  }

  /** Extends the file to hold a disk of `size` bytes (never shrinks it). */
  async grow(size: number): Promise<boolean> {
    const want = imageLength(size, this.cipher);
    if ((await this.size()) >= want) return false;
    await this.#fh.truncate(want);
    return true;
  }

  sync(): Promise<void> {
    return this.#fh.sync();
  }

  close(): Promise<void> {
    return this.#fh.close();
  }

  #around(offset: number, length: number): [number, number] {
    const u = this.unit;
    return [offset - (offset % u), Math.ceil((offset + length) / u) * u];
  }

  async #put(data: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < data.length) done += writeSync(this.#fh.fd, data, done, data.length - done, position + done);
    this.#sinceYield += data.length + 512;
    if (this.#sinceYield >= YIELD_EVERY) {
      this.#sinceYield = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}

/** Name a plain image placed before the replica existed (a seed) waits under to be encrypted. */
export const seedPath = (imagePath: string): string => `${imagePath}.seed`;

/**
 * Encrypts a plain seed image `<image>.seed` into `<image>`: written to a temporary file, fsynced,
 * renamed over the image, and only then the seed removed, so a crash at any moment leaves the seed
 * to start again from (the image is never half plain).
 */
export async function encryptSeed(imagePath: string, size: number, cipher: ImageCipher): Promise<void> {
  const seed = seedPath(imagePath);
  const tmp = `${imagePath}.xts.tmp`;
  const src = await open(seed, 'r');
  const dst = await open(tmp, 'w', 0o600);
  try {
    const length = Math.max(imageLength(size, cipher), imageLength((await src.stat()).size, cipher));
    const buf = Buffer.alloc(COPY_CHUNK);
    for (let at = 0; at < length; at += COPY_CHUNK) {
      const chunk = buf.subarray(0, Math.min(COPY_CHUNK, length - at));
      chunk.fill(0);
      const { bytesRead } = await src.read(chunk, 0, chunk.length, at);
      if (bytesRead === 0) break;
      cipher.encrypt(chunk, at);
      // Zero units stay holes: only chunks with data are written.
      if (!isZero(chunk)) {
        let done = 0;
        while (done < chunk.length) done += (await dst.write(chunk, done, chunk.length - done, at + done)).bytesWritten;
      }
    }
    await dst.truncate(length);
    await dst.sync();
  } finally {
    await src.close();
    await dst.close();
  }
  await rename(tmp, imagePath);
  await fsyncDir(dirname(imagePath));
  await unlinkIfExists(seed);
  await fsyncDir(dirname(imagePath));
}

/** Moves a plain image placed before the replica existed aside as its seed; returns whether there was one. */
export async function setSeedAside(imagePath: string): Promise<boolean> {
  const st = await stat(imagePath).catch(() => undefined);
  if (!st?.isFile()) return false;
  await rename(imagePath, seedPath(imagePath));
  return true;
}

/** Zero runs at least this long end a gathered write (left as holes, or written as zeroes apart). */
const RUN_GAP = 64 << 10;

/**
 * Gathers ascending, contiguous extents into large writes that go through the thread pool while
 * this thread goes on decoding: a full copy's frames of data runs between small zero runs become a
 * few writes of up to a buffer's size (encrypted in place for an encrypted image), and the kernel
 * throttling a writer to the disk's speed no longer stalls the decoding. Short zero runs inside a
 * gathered write are written as zeroes (the bytes dd would write; an encrypted zero unit is stored
 * as zeroes anyway); long ones end it and are skipped (an image known to hold zeroes there) or
 * written apart (`zeroes`). `drain` waits for every write; `settle` too, ignoring their errors.
 */
export class RunWriter {
  readonly #image: ImageFile;
  readonly #zeroes: boolean;
  readonly #free: Buffer[];
  /** Bytes of each buffer: the largest gathered write. */
  readonly #capacity: number;
  readonly #inflight = new Set<Promise<void>>();
  #error: unknown;
  #buf: Buffer | undefined;
  #start = 0;
  #length = 0;
  /** Bytes written to the image (data and zeroes). */
  written = 0;

  /** @param buffers the write buffers (each the largest gathered write), lent until `drain` or `settle` resolved. */
  constructor(image: ImageFile, opts: { zeroes: boolean; buffers: Buffer[] }) {
    this.#image = image;
    this.#zeroes = opts.zeroes;
    this.#free = opts.buffers;
    this.#capacity = opts.buffers[0]?.length ?? 0;
  }


  async data(offset: number, data: Buffer): Promise<void> {
    if (data.length > this.#capacity) {
      await this.flush();
      await this.#image.write(offset, data);
      this.written += data.length;
      return;
    }
    const buf = await this.#room(offset, data.length);
    data.copy(buf, this.#length);
    this.#length += data.length;
  }

  async zero(offset: number, length: number): Promise<void> {
    if (length >= RUN_GAP || length > this.#capacity) {
      await this.flush();
      if (this.#zeroes) {
        await this.#image.writeZeroes(offset, length);
        this.written += length;
      }
      return;
    }
    const buf = await this.#room(offset, length);
    buf.fill(0, this.#length, this.#length + length);
    this.#length += length;
  }

  async #room(offset: number, length: number): Promise<Buffer> {
    if (this.#length && (offset !== this.#start + this.#length || this.#length + length > this.#buf!.length)) await this.flush();
    if (!this.#buf) {
      while (!this.#free.length) await Promise.race(this.#inflight);
      this.#check();
      this.#buf = this.#free.pop()!;
      this.#start = offset;
      this.#length = 0;
    }
    return this.#buf;
  }

  #check(): void {
    if (this.#error !== undefined) throw this.#error;
  }

  /** Starts writing what is gathered. */
  async flush(): Promise<void> {
    this.#check();
    const buf = this.#buf;
    if (!buf) return;
    const n = this.#length;
    this.#buf = undefined;
    this.#length = 0;
    if (!n) {
      this.#free.push(buf);
      return;
    }
    const p: Promise<void> = this.#image.writeOwnedAsync(this.#start, buf.subarray(0, n)).then(
      () => undefined,
      (e: unknown) => void (this.#error ??= e),
    ).finally(() => {
      this.#free.push(buf);
      this.#inflight.delete(p);
    });
    this.#inflight.add(p);
    this.written += n;
  }

  /** Writes what is gathered and waits for every write; throws the first that failed. */
  async drain(): Promise<void> {
    await this.flush();
    await Promise.all([...this.#inflight]);
    this.#check();
  }

  /** Waits for the writes in flight (an error path: the image is about to close). */
  async settle(): Promise<void> {
    if (this.#buf) {
      this.#free.push(this.#buf);
      this.#buf = undefined;
    }
    await Promise.all([...this.#inflight]);
  }
}

// A VM disk as a sparse raw image file behind the BlockDevice port, plus SHA-256 helpers over
// files and devices for tests and tools.
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { BlockDevice } from '../../model/block-device.ts';
import { TerminalError } from '../../model/errors.ts';

/** Zeroes are written from one shared buffer, in chunks this large. */
const ZERO_CHUNK = 1 << 20;
const ZEROES = Buffer.alloc(ZERO_CHUNK);
const HASH_CHUNK = 4 << 20;

export interface RawDiskOpenOptions {
  /** Open without write access; writes then fail. @default false */
  readonly readOnly?: boolean;
}

export class RawDisk implements BlockDevice {
  readonly path: string;
  readonly size: number;
  readonly readOnly: boolean;
  /** Bytes this process wrote into the image (data and zeroes), for write-amplification figures. */
  bytesWritten = 0;
  private readonly fh: FileHandle;
  private closed = false;

  private constructor(path: string, fh: FileHandle, size: number, readOnly: boolean) {
    this.path = path;
    this.fh = fh;
    this.size = size;
    this.readOnly = readOnly;
  }

  /** Creates a new sparse image of `size` bytes (a multiple of 512); fails if the file exists. */
  static async create(path: string, size: number): Promise<RawDisk> {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
      throw new TerminalError('invalid-argument', `disk ${path}: size ${size} is not a positive multiple of 512`);
    }
    let fh: FileHandle;
    try {
      fh = await open(path, 'wx+', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new TerminalError('invalid-argument', `disk ${path} already exists`, { cause: e });
      }
      throw e;
    }
    // ftruncate extends without allocating: the image stays sparse until written.
    await fh.truncate(size);
    return new RawDisk(path, fh, size, false);
  }

  static async open(path: string, opts: RawDiskOpenOptions = {}): Promise<RawDisk> {
    let fh: FileHandle;
    try {
      fh = await open(path, opts.readOnly ? 'r' : 'r+');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new TerminalError('not-found', `disk ${path} does not exist`, { cause: e });
      }
      throw e;
    }
    const { size } = await fh.stat();
    if (size % 512 !== 0) {
      await fh.close();
      throw new TerminalError('invalid-argument', `disk ${path}: size ${size} is not a multiple of 512`);
    }
    return new RawDisk(path, fh, size, !!opts.readOnly);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check('read', offset, length);
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    // pread may return short counts; the file is exactly `size` long so every byte exists.
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) {
        buf.fill(0, done);
        break;
      }
      done += bytesRead;
    }
    return buf;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.check('write', offset, data.length);
    this.checkWritable();
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    this.bytesWritten += data.length;
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.check('writeZeroes', offset, length);
    this.checkWritable();
    for (let at = 0; at < length; at += ZERO_CHUNK) {
      const n = Math.min(ZERO_CHUNK, length - at);
      await this.write(offset + at, n === ZERO_CHUNK ? ZEROES : ZEROES.subarray(0, n));
    }
  }

  async flush(): Promise<void> {
    if (this.closed) throw new TerminalError('invalid-state', `disk ${this.path} is closed`);
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private check(op: string, offset: number, length: number): void {
    if (this.closed) throw new TerminalError('invalid-state', `disk ${this.path} is closed`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new TerminalError(
        'invalid-argument',
        `disk ${this.path}: ${op} of ${length} bytes at ${offset} is outside the disk (size ${this.size})`,
      );
    }
  }

  private checkWritable(): void {
    if (this.readOnly) throw new TerminalError('invalid-state', `disk ${this.path} is open read-only`);
  }
}

/** Hex SHA-256 of a whole file, read in 4 MiB chunks. */
export async function sha256File(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(HASH_CHUNK);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, HASH_CHUNK, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
    return h.digest('hex');
  } finally {
    await fh.close();
  }
}

/** Hex SHA-256 of a device's whole content, read in 4 MiB chunks. */
export async function sha256Device(dev: Pick<BlockDevice, 'size' | 'read'>): Promise<string> {
  const h = createHash('sha256');
  for (let at = 0; at < dev.size; at += HASH_CHUNK) {
    h.update(await dev.read(at, Math.min(HASH_CHUNK, dev.size - at)));
  }
  return h.digest('hex');
}

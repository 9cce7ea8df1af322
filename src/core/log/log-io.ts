// Large-buffer sequential file I/O for logs and undo files: a writer that batches small pieces
// into few big writes, and durability helpers. Avoiding a syscall per 4 KiB record is what keeps
// encoding and applying logs close to disk speed.
import { open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDir } from '../atomic-file.ts';

/** Bytes gathered before one `writev`; large enough to amortise syscalls, small enough for memory. */
const WRITE_BATCH = 4 << 20;

/** Writes a little-endian unsigned 64-bit integer from a safe JavaScript integer. */
export function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32LE(value % 0x1_0000_0000, at);
  buf.writeUInt32LE(Math.floor(value / 0x1_0000_0000), at + 4);
}

/** Reads a little-endian unsigned 64-bit integer; undefined when it exceeds 2^53. */
export function readU64(buf: Buffer, at: number): number | undefined {
  const hi = buf.readUInt32LE(at + 4);
  if (hi > 0x1f_ffff) return undefined;
  return hi * 0x1_0000_0000 + buf.readUInt32LE(at);
}

export { fsyncDir };

export async function unlinkIfExists(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * Appends to a new file `<path>.tmp` and, on `seal()`, fsyncs it and renames it to `path`, so the
 * final name only ever names a complete file. `observe` sees every byte in order (for a MAC).
 */
export class SealedFileWriter {
  readonly path: string;
  private readonly tmp: string;
  private fh: FileHandle | undefined;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private position = 0;
  private readonly observe: ((chunk: Buffer) => void) | undefined;

  private constructor(path: string, fh: FileHandle, observe?: (chunk: Buffer) => void) {
    this.path = path;
    this.tmp = `${path}.tmp`;
    this.fh = fh;
    this.observe = observe;
  }

  static async create(path: string, observe?: (chunk: Buffer) => void): Promise<SealedFileWriter> {
    return new SealedFileWriter(path, await open(`${path}.tmp`, 'w', 0o600), observe);
  }

  /** Bytes appended so far (the offset the next byte will land at). */
  get bytes(): number {
    return this.position;
  }

  /** The buffer must not be modified until the writer has flushed it. */
  async append(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    this.observe?.(chunk);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.position += chunk.length;
    if (this.pendingBytes >= WRITE_BATCH) await this.flush();
  }

  private async flush(): Promise<void> {
    const list = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    let buffers = list;
    while (buffers.length) {
      // writev may write partially; continue from where it stopped.
      const { bytesWritten } = await this.fh!.writev(buffers);
      let left = bytesWritten;
      const rest: Buffer[] = [];
      for (const b of buffers) {
        if (left >= b.length) left -= b.length;
        else {
          rest.push(left > 0 ? b.subarray(left) : b);
          left = 0;
        }
      }
      buffers = rest;
    }
  }

  /** Flushes, fsyncs, closes and renames into place; the caller fsyncs the directory (batching). */
  async seal(opts: { syncDir?: boolean } = {}): Promise<void> {
    await this.flush();
    await this.fh!.sync();
    await this.fh!.close();
    this.fh = undefined;
    await rename(this.tmp, this.path);
    if (opts.syncDir ?? true) await fsyncDir(dirname(this.path));
  }

  /** Abandons the file: nothing appears under the final name. */
  async abort(): Promise<void> {
    if (this.fh) {
      await this.fh.close().catch(() => undefined);
      this.fh = undefined;
    }
    await unlinkIfExists(this.tmp);
  }
}

/** Sequential reader over a file region with a large read-ahead buffer. */
export class ChunkReader {
  private readonly fh: FileHandle;
  private position: number;
  private readonly end: number;
  private buf: Buffer = Buffer.alloc(0);
  private at = 0;
  private readonly chunk: number;
  private readonly reuse: boolean;
  private own: Buffer | undefined;

  /**
   * With `reuse`, one buffer is refilled in place: a view `take` returned is only valid until the
   * next `take` (no fresh memory per refill, which page-faults on every first touch).
   */
  constructor(fh: FileHandle, start: number, end: number, chunk = WRITE_BATCH, opts: { reuse?: boolean } = {}) {
    this.fh = fh;
    this.position = start;
    this.end = end;
    this.chunk = chunk;
    this.reuse = opts.reuse ?? false;
  }

  /** File offset of the next byte `take` returns. */
  get offset(): number {
    return this.position - (this.buf.length - this.at);
  }

  /** The next `n` bytes, or undefined at a premature end of the region (see `reuse` for how long the view is valid). */
  async take(n: number): Promise<Buffer | undefined> {
    if (this.buf.length - this.at >= n) {
      const out = this.buf.subarray(this.at, this.at + n);
      this.at += n;
      return out;
    }
    const have = this.buf.length - this.at;
    const want = Math.min(Math.max(n - have, this.chunk), this.end - this.position);
    if (have + want < n) return undefined;
    // A fresh buffer per refill keeps earlier views valid, at the cost of GC and page faults.
    let next: Buffer;
    if (this.reuse && this.own && this.own.length >= have + want) {
      next = this.own.subarray(0, have + want);
      this.buf.copy(next, 0, this.at, this.at + have); // moves the tail down: memmove semantics
    } else {
      // allocUnsafeSlow: never a slice of Node's shared pool, so refilling it in place is safe.
      next = this.reuse ? Buffer.allocUnsafeSlow(have + want) : Buffer.allocUnsafe(have + want);
      this.buf.copy(next, 0, this.at, this.at + have);
      if (this.reuse) this.own = next;
    }
    let filled = have;
    while (filled < next.length) {
      const { bytesRead } = await this.fh.read(next, filled, next.length - filled, this.position);
      if (bytesRead === 0) return undefined;
      filled += bytesRead;
      this.position += bytesRead;
    }
    this.buf = next;
    this.at = 0;
    return this.take(n);
  }
}

// Copy-before-write store of one frozen cut: the old content of blocks overwritten before the cut
// read them. Kept in memory up to a limit, then appended to a side file that lives only as long as
// the cut (a crash loses tracking continuity anyway, so the side file is never fsynced).
import { open, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';

export class CbwStore {
  private readonly sidePath: string;
  private readonly memoryLimit: number;
  private readonly memory = new Map<number, Buffer>();
  private readonly onDisk = new Map<number, { at: number; length: number }>();
  private side: FileHandle | undefined;
  private sideEnd = 0;
  /** Bytes currently held in memory. */
  memoryBytes = 0;
  /** Bytes ever appended to the side file (write-amplification figure). */
  sideBytesWritten = 0;

  constructor(sidePath: string, memoryLimit: number) {
    this.sidePath = sidePath;
    this.memoryLimit = memoryLimit;
  }

  has(block: number): boolean {
    return this.memory.has(block) || this.onDisk.has(block);
  }

  get size(): number {
    return this.memory.size + this.onDisk.size;
  }

  /** Keeps `data` (not retained by reference: callers pass a slice they own). */
  async put(block: number, data: Buffer): Promise<void> {
    if (this.memoryBytes + data.length <= this.memoryLimit) {
      this.memory.set(block, data);
      this.memoryBytes += data.length;
      return;
    }
    this.side ??= await open(this.sidePath, 'w+', 0o600);
    const at = this.sideEnd;
    this.sideEnd += data.length;
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.side.write(data, done, data.length - done, at + done);
      done += bytesWritten;
    }
    this.onDisk.set(block, { at, length: data.length });
    this.sideBytesWritten += data.length;
  }

  /** Returns the preserved content and forgets it. */
  async take(block: number): Promise<Buffer> {
    const m = this.memory.get(block);
    if (m) {
      this.memory.delete(block);
      this.memoryBytes -= m.length;
      return m;
    }
    const d = this.onDisk.get(block);
    if (!d || !this.side) throw new Error(`copy-before-write store has no block ${block}`);
    this.onDisk.delete(block);
    const buf = Buffer.allocUnsafe(d.length);
    let done = 0;
    while (done < d.length) {
      const { bytesRead } = await this.side.read(buf, done, d.length - done, d.at + done);
      if (bytesRead === 0) throw new Error(`copy-before-write side file ${this.sidePath} is truncated`);
      done += bytesRead;
    }
    return buf;
  }

  async dispose(): Promise<void> {
    this.memory.clear();
    this.onDisk.clear();
    this.memoryBytes = 0;
    if (this.side) {
      await this.side.close();
      this.side = undefined;
      await unlink(this.sidePath).catch(() => undefined);
    }
  }
}

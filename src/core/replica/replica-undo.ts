// Undo segments: the content a disk range held before a recovery point overwrote it. They keep
// older points readable without copying the disk, and an undo segment that exists under its final
// name is complete (written to `.tmp`, fsynced, renamed).
//
// Layout: "DRSUNDO1" | data blobs | table (count x [offset u64 | length u32 | flags u32 | fileOffset u64])
//         | "DRSUNDOF" | count u64 | tableOffset u64 | sha256(table)[32]
// flags 1 = the range held zeroes (no blob). Table entries are sorted and never overlap.
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { TerminalError } from '../../model/errors.ts';
import { RangeSet } from './replica-ranges.ts';
import { SealedFileWriter, readU64, writeU64 } from '../log/log-io.ts';

const MAGIC = 'DRSUNDO1';
const FOOT_MAGIC = 'DRSUNDOF';
const ENTRY_BYTES = 24;
const FOOTER_BYTES = 8 + 8 + 8 + 32;
const FLAG_ZERO = 1;
/** Undo data is read and copied in pieces of at most this size. */
export const UNDO_CHUNK = 1 << 20;
const ZEROES = Buffer.alloc(UNDO_CHUNK);

export interface UndoEntry {
  readonly offset: number;
  readonly length: number;
  readonly zero: boolean;
  /** Where the blob starts in the undo file (unused for zero entries). */
  readonly fileOffset: number;
}

export function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += UNDO_CHUNK) {
    const part = b.subarray(at, at + UNDO_CHUNK);
    if (!part.equals(ZEROES.subarray(0, part.length))) return false;
  }
  return true;
}

export class UndoWriter {
  private readonly w: SealedFileWriter;
  private readonly entries: UndoEntry[] = [];

  private constructor(w: SealedFileWriter) {
    this.w = w;
  }

  static async create(path: string): Promise<UndoWriter> {
    const w = await SealedFileWriter.create(path);
    await w.append(Buffer.from(MAGIC, 'latin1'));
    return new UndoWriter(w);
  }

  /** Adds a range's old content; ranges must not overlap ones added before. All-zero data is stored as metadata. */
  async add(offset: number, data: Buffer): Promise<void> {
    if (isZero(data)) {
      this.entries.push({ offset, length: data.length, zero: true, fileOffset: 0 });
      return;
    }
    this.entries.push({ offset, length: data.length, zero: false, fileOffset: this.w.bytes });
    await this.w.append(data);
  }

  addZero(offset: number, length: number): void {
    this.entries.push({ offset, length, zero: true, fileOffset: 0 });
  }

  /** Writes the table, seals the file (without fsyncing its directory) and returns its size. */
  async finish(): Promise<number> {
    this.entries.sort((a, b) => a.offset - b.offset);
    const table = Buffer.alloc(this.entries.length * ENTRY_BYTES);
    this.entries.forEach((e, i) => {
      const at = i * ENTRY_BYTES;
      writeU64(table, e.offset, at);
      table.writeUInt32LE(e.length, at + 8);
      table.writeUInt32LE(e.zero ? FLAG_ZERO : 0, at + 12);
      writeU64(table, e.fileOffset, at + 16);
    });
    const tableOffset = this.w.bytes;
    await this.w.append(table);
    const foot = Buffer.alloc(FOOTER_BYTES);
    foot.write(FOOT_MAGIC, 0, 'latin1');
    writeU64(foot, this.entries.length, 8);
    writeU64(foot, tableOffset, 16);
    createHash('sha256').update(table).digest().copy(foot, 24);
    await this.w.append(foot);
    const size = this.w.bytes;
    await this.w.seal({ syncDir: false });
    return size;
  }

  abort(): Promise<void> {
    return this.w.abort();
  }
}

export class UndoFile {
  readonly path: string;
  readonly entries: readonly UndoEntry[];
  readonly bytes: number;
  private readonly fh: FileHandle;

  private constructor(path: string, fh: FileHandle, entries: UndoEntry[], bytes: number) {
    this.path = path;
    this.fh = fh;
    this.entries = entries;
    this.bytes = bytes;
  }

  static async open(path: string): Promise<UndoFile> {
    const fh = await open(path, 'r');
    try {
      const size = (await stat(path)).size;
      const bad = (what: string) => new TerminalError('invalid-state', `undo segment ${path}: ${what}`);
      if (size < 8 + FOOTER_BYTES) throw bad('truncated');
      const foot = Buffer.alloc(FOOTER_BYTES);
      await fh.read(foot, 0, FOOTER_BYTES, size - FOOTER_BYTES);
      const count = readU64(foot, 8);
      const tableOffset = readU64(foot, 16);
      if (foot.toString('latin1', 0, 8) !== FOOT_MAGIC || count === undefined || tableOffset === undefined) throw bad('no footer');
      if (tableOffset + count * ENTRY_BYTES !== size - FOOTER_BYTES) throw bad('table size does not match the file');
      const table = Buffer.alloc(count * ENTRY_BYTES);
      await fh.read(table, 0, table.length, tableOffset);
      if (!createHash('sha256').update(table).digest().equals(foot.subarray(24))) throw bad('table checksum mismatch');
      const entries: UndoEntry[] = [];
      for (let i = 0; i < count; i++) {
        const at = i * ENTRY_BYTES;
        entries.push({
          offset: readU64(table, at)!,
          length: table.readUInt32LE(at + 8),
          zero: (table.readUInt32LE(at + 12) & FLAG_ZERO) !== 0,
          fileOffset: readU64(table, at + 16)!,
        });
      }
      return new UndoFile(path, fh, entries, size);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Index of the first entry that ends after `pos`. */
  firstEndingAfter(pos: number): number {
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const e = this.entries[mid];
      if (e.offset + e.length <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Reads `length` bytes of the old content at disk offset `offset`, which must lie inside `entry`. */
  async readInto(entry: UndoEntry, offset: number, length: number, out: Buffer, outAt: number): Promise<void> {
    if (entry.zero) {
      out.fill(0, outAt, outAt + length);
      return;
    }
    let done = 0;
    const from = entry.fileOffset + (offset - entry.offset);
    while (done < length) {
      const { bytesRead } = await this.fh.read(out, outAt + done, length - done, from + done);
      if (bytesRead === 0) throw new TerminalError('invalid-state', `undo segment ${this.path} ends early`);
      done += bytesRead;
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/**
 * Physically merges segments (oldest first) into one: for every byte the oldest segment holding it
 * wins, which is the content at the earliest point; shadowed newer copies are dropped.
 */
export async function mergeUndo(sources: readonly UndoFile[], out: string): Promise<number> {
  const w = await UndoWriter.create(out);
  try {
    const covered = new RangeSet();
    for (const src of sources) {
      for (const e of src.entries) {
        for (const g of covered.gaps(e.offset, e.offset + e.length)) {
          if (e.zero) {
            w.addZero(g.start, g.end - g.start);
            continue;
          }
          for (let at = g.start; at < g.end; at += UNDO_CHUNK) {
            const n = Math.min(UNDO_CHUNK, g.end - at);
            const buf = Buffer.allocUnsafe(n);
            await src.readInto(e, at, n, buf, 0);
            await w.add(at, buf);
          }
        }
        covered.add(e.offset, e.offset + e.length);
      }
    }
    return await w.finish();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

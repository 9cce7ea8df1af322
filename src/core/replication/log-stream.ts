// The pieces of a streamed delta (transfer-delta.ts streamDelta): a sealed log goes to the replica as it
// is encoded, through a bounded pipe (the encoder waits for the network), and a tee keeps the same
// bytes until the replica acknowledged them, in memory up to a limit and then in the outbox file,
// never fsynced. On success the tee is dropped: nothing of the log was staged durably on the
// primary. On a failed send the tee is sealed into the outbox, so the ordinary upload resumes
// from the replica's durable offset with exactly the bytes it already holds.
import { classifyDiskFull, isDiskFull } from '../disk-full.ts';
import { SealedFileWriter } from '../log/log-io.ts';
import { dirname } from 'node:path';
import { mkdir } from 'node:fs/promises';

/** Bytes a tee holds in memory before it spills to its file. */
export const TEE_MEMORY_BYTES = 16 << 20;

/** Bytes the pipe buffers ahead of the network before the encoder waits. */
const PIPE_HIGH_WATER = 4 << 20;

/**
 * A bounded pipe of chunks from the encoder (`push`) to a request body (`read`). `close` is the
 * consumer giving up (the send failed): pushes then return at once and drop their chunk.
 */
export class ChunkPipe {
  readonly #chunks: Buffer[] = [];
  #buffered = 0;
  #ended = false;
  #closed = false;
  #error: unknown;
  #wakeReader: (() => void) | undefined;
  #wakeWriter: (() => void) | undefined;

  async push(chunk: Buffer): Promise<void> {
    if (this.#closed) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    this.#wake('reader');
    while (this.#buffered > PIPE_HIGH_WATER && !this.#closed) await new Promise<void>((r) => (this.#wakeWriter = r));
  }

  /** No more chunks; with `error`, the body fails (the request is torn, never completed). */
  end(error?: unknown): void {
    this.#ended = true;
    this.#error = error;
    this.#wake('reader');
  }

  close(): void {
    this.#closed = true;
    this.#chunks.length = 0;
    this.#buffered = 0;
    this.#wake('writer');
  }

  #wake(who: 'reader' | 'writer'): void {
    const w = who === 'reader' ? this.#wakeReader : this.#wakeWriter;
    if (who === 'reader') this.#wakeReader = undefined;
    else this.#wakeWriter = undefined;
    w?.();
  }

  async *read(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const c = this.#chunks.shift();
        if (c) {
          this.#buffered -= c.length;
          if (this.#buffered <= PIPE_HIGH_WATER) this.#wake('writer');
          yield c;
          continue;
        }
        if (this.#ended) {
          if (this.#error !== undefined) throw this.#error;
          return;
        }
        await new Promise<void>((r) => (this.#wakeReader = r));
      }
    } finally {
      this.close(); // the body stopped being read (done, or the request failed)
    }
  }
}

/**
 * The primary's copy of a streamed log until the replica acknowledges it: memory first, then
 * `path` (as `<path>.tmp`, not fsynced). `keep` makes it the outbox's sealed log; `discard`
 * drops it. A full file system while spilling is remembered, not thrown: the stream may still
 * succeed, and only `keep` needs the file.
 */
export class LogTee {
  readonly path: string;
  #memory: Buffer[] = [];
  #memoryBytes = 0;
  #file: SealedFileWriter | undefined;
  #full: unknown;
  #bytes = 0;

  constructor(path: string) {
    this.path = path;
  }

  async #create(): Promise<SealedFileWriter> {
    await mkdir(dirname(this.path), { recursive: true });
    return SealedFileWriter.create(this.path);
  }

  /** Bytes of the log so far. */
  get bytes(): number {
    return this.#bytes;
  }

  async append(chunk: Buffer): Promise<void> {
    this.#bytes += chunk.length;
    if (this.#full !== undefined) return; // counted only: keep() reports how much room was needed
    if (!this.#file && this.#memoryBytes + chunk.length <= TEE_MEMORY_BYTES) {
      this.#memory.push(chunk);
      this.#memoryBytes += chunk.length;
      return;
    }
    try {
      this.#file ??= await this.#create();
      for (const m of this.#memory) await this.#file.append(m);
      this.#memory = [];
      this.#memoryBytes = 0;
      await this.#file.append(chunk);
    } catch (e) {
      if (!isDiskFull(e)) throw e;
      this.#full = e;
      this.#memory = [];
      this.#memoryBytes = 0;
    }
  }

  /** Seals the log into `path` (fsync, rename, directory fsync). Throws DiskFull when it did not fit. */
  async keep(): Promise<void> {
    try {
      if (this.#full !== undefined) throw this.#full;
      this.#file ??= await this.#create();
      for (const m of this.#memory) await this.#file.append(m);
      this.#memory = [];
      await this.#file.seal();
    } catch (e) {
      await this.discard();
      throw await classifyDiskFull(e, dirname(this.path), this.#bytes);
    }
  }

  async discard(): Promise<void> {
    this.#memory = [];
    this.#memoryBytes = 0;
    await this.#file?.abort();
    this.#file = undefined;
  }
}

// The sending half of a resumable upload (protocol: upload-protocol.ts): a file in chunks that
// resume from the server's offset after a failure, paced when a bandwidth cap asks, its SHA-256
// taken as it is read; or a file streamed in one request as it is produced.
import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { systemClock, type Clock } from '../model/clock.ts';
import { RetryableError, TerminalError } from '../model/errors.ts';
import type { MtlsClient } from './mtls.ts';
import { UPLOAD_CHECKSUM, UPLOAD_COMPLETE, UPLOAD_DEFER_LENGTH, UPLOAD_LENGTH, UPLOAD_OFFSET, type UploadCompletion } from './upload-protocol.ts';
import { CONTENT_TYPE_OCTETS } from './wire.ts';

export interface UploadFileOptions {
  /** Bytes per PUT (the server fsyncs each), held in memory twice (the next one is read ahead). @default 32 MiB */
  readonly chunkSize?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /** RetryableErrors tolerated in a row (an acknowledged chunk resets the count). @default 5 */
  readonly retries?: number;
  /** First pause before a retry; doubles each time, at most 5 s. @default 200 */
  readonly retryDelayMs?: number;
  /** @default systemClock */
  readonly clock?: Clock;
  /**
   * Called before each slice of a chunk (PACE_SLICE bytes at most) goes out, with its size; the
   * slice waits until it resolves (a bandwidth cap pacing the body). @default none: sent at once
   */
  readonly pace?: (bytes: number) => Promise<void>;
}

/**
 * Slices a paced chunk is sent in: small enough that at a low cap a slice still arrives well
 * inside the request's no-progress timeout (64 KiB in 60 s is about 1.1 KiB/s).
 */
export const PACE_SLICE = 64 << 10;

function pacedBody(buf: Buffer, pace: (bytes: number) => Promise<void>): Readable {
  return Readable.from(
    (async function* () {
      for (let at = 0; at < buf.length; at += PACE_SLICE) {
        const slice = buf.subarray(at, Math.min(at + PACE_SLICE, buf.length));
        await pace(slice.length);
        yield slice;
      }
    })(),
    { objectMode: false },
  );
}

export interface UploadResult {
  readonly size: number;
  readonly sha256: string;
  /** The server offset each attempt started from (first entry > 0: resumed an earlier call). */
  readonly startedAt: readonly number[];
}

function intResponseHeader(v: string | string[] | undefined, what: string): number {
  const n = typeof v === 'string' && /^\d{1,16}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new TerminalError('invalid-state', `${what}: server sent no valid ${UPLOAD_OFFSET}`);
  return n;
}

// SHA-256 of the source computed as it is read for sending, each byte exactly once even when a
// resume goes back (a chunk the server only partly kept) or forward (an earlier call's bytes).
class SourceHash {
  readonly #fh: FileHandle;
  readonly #hash: Hash = createHash('sha256');
  #through = 0;
  #digest: string | undefined;
  constructor(fh: FileHandle) {
    this.#fh = fh;
  }
  async add(start: number, buf: Buffer): Promise<void> {
    while (this.#through < start) {
      const n = Math.min(start - this.#through, 8 << 20);
      this.#hash.update(await readRange(this.#fh, this.#through, this.#through + n));
      this.#through += n;
    }
    const end = start + buf.length;
    if (end > this.#through) {
      this.#hash.update(buf.subarray(this.#through - start));
      this.#through = end;
    }
  }
  async digest(size: number): Promise<string> {
    if (this.#digest === undefined) {
      await this.add(size, Buffer.alloc(0));
      this.#digest = this.#hash.digest('hex');
    }
    return this.#digest;
  }
}

async function readRange(fh: FileHandle, start: number, end: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(end - start);
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, start + off);
    if (bytesRead === 0) throw new TerminalError('invalid-state', `source file shrank while uploading (wanted ${end} bytes)`);
    off += bytesRead;
  }
  return buf;
}

/**
 * Uploads the file at `path` to `url` (a path on the client's server served by upload-server.ts's `handleUpload`),
 * continuing from whatever the server already holds. Resolves only after the server acknowledged
 * the complete, checksum-verified file. A RetryableError is retried in place up to `retries`
 * times in a row (each attempt resumes from the server's offset); TerminalErrors and the last
 * RetryableError are thrown.
 */
export async function uploadFile(client: MtlsClient, path: string, url: string, opts: UploadFileOptions = {}): Promise<UploadResult> {
  const chunkSize = opts.chunkSize ?? 32 << 20;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) throw new TerminalError('invalid-argument', `chunkSize must be a positive integer, got ${chunkSize}`);
  const retries = opts.retries ?? 5;
  const delay0 = opts.retryDelayMs ?? 200;
  const clock = opts.clock ?? systemClock;
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const hash = new SourceHash(fh);
    const startedAt: number[] = [];
    let failures = 0;
    for (;;) {
      try {
        const head = await client.request('HEAD', url);
        let offset = intResponseHeader(head.headers[UPLOAD_OFFSET], `HEAD ${url}`);
        if (head.headers[UPLOAD_COMPLETE] === '1') {
          // An earlier call finished but lost its acknowledgement: make sure it was this file.
          const theirs = /^sha256=(\w+)$/.exec(String(head.headers[UPLOAD_CHECKSUM] ?? ''))?.[1];
          const ours = await hash.digest(size);
          if (offset !== size || theirs !== ours) {
            throw new TerminalError('invalid-state', `${url} already holds a different complete upload (${offset} bytes, sha256 ${theirs})`);
          }
          opts.onProgress?.(size, size);
          return { size, sha256: ours, startedAt };
        }
        if (offset > size) throw new TerminalError('invalid-state', `${url} holds ${offset} bytes, more than the ${size}-byte source ${path}`);
        startedAt.push(offset);
        let ahead: Promise<Buffer> | undefined;
        for (;;) {
          const end = Math.min(offset + chunkSize, size);
          const buf = await (ahead ?? readRange(fh, offset, end));
          // The next chunk loads while this one travels; a retry starts again from HEAD without it.
          ahead = end < size ? readRange(fh, end, Math.min(end + chunkSize, size)) : undefined;
          ahead?.catch(() => {});
          await hash.add(offset, buf);
          const final = end === size;
          const headers: Record<string, string> = {
            [UPLOAD_OFFSET]: String(offset),
            [UPLOAD_LENGTH]: String(size),
            'content-type': CONTENT_TYPE_OCTETS,
          };
          if (final) headers[UPLOAD_CHECKSUM] = `sha256=${await hash.digest(size)}`;
          const paced = opts.pace && buf.length > 0;
          if (paced) headers['content-length'] = String(buf.length);
          const r = await client.request('PUT', url, paced ? pacedBody(buf, opts.pace!) : buf, headers);
          if (final) {
            const c = r.json<UploadCompletion>();
            const ours = await hash.digest(size);
            if (c.complete !== true || c.size !== size || c.sha256 !== ours) {
              throw new TerminalError('integrity', `${url}: server acknowledged ${JSON.stringify(c)}, expected ${size} bytes with sha256 ${ours}`);
            }
            opts.onProgress?.(size, size);
            return { size, sha256: ours, startedAt };
          }
          const next = intResponseHeader(r.headers[UPLOAD_OFFSET], `PUT ${url}`);
          if (next !== end) throw new RetryableError('invalid-state', `${url}: server holds ${next} bytes after a chunk ending at ${end}`);
          offset = next;
          failures = 0;
          opts.onProgress?.(offset, size);
        }
      } catch (e) {
        if (!RetryableError.is(e) || ++failures > retries) throw e;
        await clock.sleep(Math.min(delay0 * 2 ** (failures - 1), 5_000));
      }
    }
  } finally {
    await fh.close();
  }
}

/**
 * Sends a file as `body` produces it, in one streamed PUT (Upload-Defer-Length: 1) that replaces
 * any partial upload at `url`. Resolves with the server's acknowledgement once the whole file is
 * complete there (and its `onComplete` accepted it). Not retried: a torn stream leaves the
 * server's fsynced bytes, from which `uploadFile` of the same bytes resumes.
 */
export async function uploadStream(client: MtlsClient, url: string, body: AsyncIterable<Buffer>): Promise<UploadCompletion> {
  const r = await client.request('PUT', url, Readable.from(body, { objectMode: false }), {
    [UPLOAD_OFFSET]: '0',
    [UPLOAD_DEFER_LENGTH]: '1',
    'content-type': CONTENT_TYPE_OCTETS,
  });
  const c = r.json<UploadCompletion>();
  if (c.complete !== true) throw new TerminalError('integrity', `${url}: server answered a streamed upload with ${JSON.stringify(c)}`);
  return c;
}

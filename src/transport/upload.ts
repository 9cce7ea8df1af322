// Resumable, durable uploads of one file (a replication log, up to GBs) over the mTLS client.
// Protocol (in the spirit of tus / IETF resumable uploads):
//   HEAD <url>  -> 200, Upload-Offset: bytes the server holds durably, Upload-Complete: 1|0
//   PUT  <url>  Upload-Offset, Upload-Length, body = the bytes from that offset
//               (the last chunk also carries Upload-Checksum: sha256=<hex> of the whole file)
//            -> 204 + Upload-Offset after the bytes are fsynced, or, when the file is complete,
//               200 {complete, size, sha256} only after `onComplete` resolved: that is the ack.
//   PUT  <url>  Upload-Offset: 0, Upload-Defer-Length: 1, body = the whole file as the sender
//               produces it (a streamed log: its length is known only at its end). It replaces
//               any partial upload; the request's end completes it (no checksum header: the
//               sha256 is taken as it arrives, and `onComplete` verifies the content). A torn one
//               keeps its fsynced bytes, which an ordinary PUT can then resume from.
import { createHash, type Hash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { KeyedMutex } from '../core/async-mutex.ts';
import { fsyncDir, readJsonIfExists, writeJsonAtomic } from '../core/atomic-file.ts';
import { systemClock, type Clock } from '../model/clock.ts';
import { RetryableError, TerminalError } from '../model/errors.ts';
import { HttpStatusError, sendError } from './http-errors.ts';
import type { MtlsClient } from './mtls.ts';
import { CONTENT_TYPE_OCTETS, sendJson } from './wire.ts';

export { TransferCounters } from './transfer-counters.ts';

export const UPLOAD_OFFSET = 'upload-offset';
export const UPLOAD_LENGTH = 'upload-length';
export const UPLOAD_COMPLETE = 'upload-complete';
export const UPLOAD_CHECKSUM = 'upload-checksum';
export const UPLOAD_DEFER_LENGTH = 'upload-defer-length';

/** The acknowledgement of a complete upload (PUT 200 body; kept in `<name>.complete`). */
export interface UploadCompletion {
  readonly complete: true;
  readonly size: number;
  readonly sha256: string;
}

export interface HandleUploadOptions {
  /** Directory holding `<name>.part` while receiving, then `<name>` and `<name>.complete`. */
  readonly dir: string;
  /** Upload id, a plain file name (letters, digits, `.`, `_`, `-`). */
  readonly name: string;
  /** When set, a client declaring another Upload-Length is refused (400). */
  readonly expectedSize?: number;
  /**
   * Makes the complete file (`<dir>/<name>`, SHA-256 verified) durable where it belongs, e.g.
   * moves it into the replica store. The client is acknowledged only after it resolves; if it
   * throws, the client gets that error and the next attempt calls it again. Called once per
   * upload, or again after a server crash between its return and the acknowledgement record,
   * so it must be idempotent.
   */
  readonly onComplete: (path: string) => void | Promise<void>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

function paths(dir: string, name: string): { part: string; final: string; marker: string } {
  if (!NAME.test(name) || name.includes('..') || name.endsWith('.part') || name.endsWith('.complete')) {
    throw new HttpStatusError(400, `upload name "${name}" is not a plain file name`);
  }
  return { part: join(dir, `${name}.part`), final: join(dir, name), marker: join(dir, `${name}.complete`) };
}

// One request at a time per upload: a HEAD must not report an offset while an earlier,
// interrupted PUT is still flushing bytes, or the resumed PUT would be refused as out of order.
const locks = new KeyedMutex();
const withLock = <T>(key: string, fn: () => Promise<T>): Promise<T> => locks.run(key, fn);

async function sizeIfExists(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

type UploadState =
  | { readonly kind: 'receiving'; readonly offset: number }
  | { readonly kind: 'received'; readonly offset: number } // renamed to <name>, not yet acknowledged
  | { readonly kind: 'complete'; readonly offset: number; readonly completion: UploadCompletion };

async function stateOf(p: ReturnType<typeof paths>): Promise<UploadState> {
  const completion = await readJsonIfExists<UploadCompletion>(p.marker);
  if (completion !== undefined) return { kind: 'complete', offset: completion.size, completion };
  const final = await sizeIfExists(p.final);
  if (final !== undefined) return { kind: 'received', offset: final };
  return { kind: 'receiving', offset: (await sizeIfExists(p.part)) ?? 0 };
}

function intHeader(req: IncomingMessage, name: string): number {
  const raw = req.headers[name];
  const n = typeof raw === 'string' && /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n)) throw new HttpStatusError(400, `header ${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

function drain(req: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    if (req.complete || req.destroyed) return resolve();
    req.once('end', resolve);
    req.once('close', resolve);
    req.resume();
  });
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let off = 0;
  while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
}

/** Bytes gathered before one write: TLS hands the body over in records of at most 16 KiB. */
const WRITE_BATCH = 4 << 20;

// Appends the body to `fh` with back-pressure, in writes of up to WRITE_BATCH bytes (not one per TLS
// record). On a write failure the rest of the body is drained so the client can still be answered.
function appendBody(
  req: IncomingMessage,
  fh: FileHandle,
  max: number,
  hash?: Hash,
): Promise<{ written: number; failure?: unknown; aborted: boolean }> {
  return new Promise((resolve) => {
    let written = 0;
    let accepted = 0;
    let failure: unknown;
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let pending = Promise.resolve();
    let done = false;
    const flush = (): Promise<void> => {
      const bufs = batch;
      batch = [];
      batchBytes = 0;
      if (bufs.length === 0) return pending;
      pending = pending.then(async () => {
        if (failure !== undefined) return;
        const data = bufs.length === 1 ? bufs[0] : Buffer.concat(bufs);
        try {
          await writeAll(fh, data);
          written += data.length;
        } catch (e) {
          failure = e;
        }
      });
      return pending;
    };
    const finish = (aborted: boolean): void => {
      if (done) return;
      done = true;
      // What arrived before an abort is written too: the caller keeps (and fsyncs) it for a resume.
      void flush().then(() => resolve({ written, failure, aborted }));
    };
    // The peer may have vanished while this request waited for the lock: its 'close' is past.
    if (req.destroyed) return finish(!req.complete);
    req.on('data', (chunk: Buffer) => {
      if (failure !== undefined) return;
      if (accepted + chunk.length > max) {
        failure = new HttpStatusError(400, `body runs past the declared Upload-Length`);
        return;
      }
      accepted += chunk.length;
      hash?.update(chunk);
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= WRITE_BATCH) {
        req.pause();
        void flush().finally(() => req.resume());
      }
    });
    req.once('end', () => finish(false));
    req.once('error', () => finish(true));
    req.once('close', () => finish(!req.complete));
  });
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  } finally {
    await fh.close().catch(() => {});
  }
  return h.digest('hex');
}

function parseChecksum(req: IncomingMessage): string | undefined {
  const raw = req.headers[UPLOAD_CHECKSUM];
  if (raw === undefined) return undefined;
  const m = typeof raw === 'string' ? /^sha256=([0-9a-fA-F]{64})$/.exec(raw.trim()) : null;
  if (m === null) throw new HttpStatusError(400, `header ${UPLOAD_CHECKSUM} must be "sha256=<64 hex digits>"`);
  return m[1].toLowerCase();
}

async function finishUpload(
  p: ReturnType<typeof paths>,
  o: HandleUploadOptions,
  state: UploadState,
  checksum: string | undefined,
  arrived?: string,
): Promise<UploadCompletion> {
  const file = state.kind === 'received' ? p.final : p.part;
  if (state.kind === 'receiving' && state.offset === 0) {
    await mkdir(o.dir, { recursive: true }); // an empty upload never wrote a part file
    await (await open(p.part, 'a')).close();
  }
  // Read back from the file rather than hashed as it arrived: a byte the disk damaged since is
  // caught. A streamed upload (`arrived`) has no sender checksum to compare: its content is
  // verified by `onComplete` (a sealed log's MAC), so the hash taken on arrival serves.
  const sha256 = arrived ?? (await sha256File(file));
  if (checksum !== undefined && checksum !== sha256) {
    // Which byte is wrong is unknowable: drop it all so the retry starts from zero.
    await rm(file, { force: true });
    await fsyncDir(o.dir);
    throw new RetryableError(
      'integrity',
      `upload ${o.name}: the ${state.offset} bytes received hash to ${sha256}, the sender's file to ${checksum}; discarded, resend from the start`,
    );
  }
  if (state.kind === 'receiving') {
    await rename(p.part, p.final);
    await fsyncDir(o.dir);
  }
  await o.onComplete(p.final);
  const completion: UploadCompletion = { complete: true, size: state.offset, sha256 };
  await writeJsonAtomic(p.marker, completion);
  return completion;
}

/**
 * Serves HEAD and PUT for one upload (the caller routes `<url>` and picks `dir` / `name`).
 * Answers every outcome itself, errors included (through `sendError`).
 */
export async function handleUpload(req: IncomingMessage, res: ServerResponse, o: HandleUploadOptions): Promise<void> {
  try {
    const p = paths(o.dir, o.name);
    await withLock(p.final, async () => {
      if (req.method === 'HEAD') {
        const s = await stateOf(p);
        res.writeHead(200, {
          [UPLOAD_OFFSET]: String(s.offset),
          [UPLOAD_COMPLETE]: s.kind === 'complete' ? '1' : '0',
          ...(s.kind === 'complete' ? { [UPLOAD_CHECKSUM]: `sha256=${s.completion.sha256}` } : {}),
          'cache-control': 'no-store',
          'content-length': '0',
        });
        res.end();
        return;
      }
      if (req.method !== 'PUT') throw new HttpStatusError(405, `method ${req.method} not allowed on an upload (HEAD, PUT)`);
      await put(req, res, o, p);
    });
  } catch (e) {
    await drain(req);
    sendError(res, e);
  }
}

/** A streamed upload (Upload-Defer-Length: 1): the whole file in one request, its end completing it. */
async function putStreamed(req: IncomingMessage, res: ServerResponse, o: HandleUploadOptions, p: ReturnType<typeof paths>): Promise<void> {
  if (intHeader(req, UPLOAD_OFFSET) !== 0) throw new HttpStatusError(400, `a streamed upload (${UPLOAD_DEFER_LENGTH}) starts at offset 0`);
  if (req.headers[UPLOAD_LENGTH] !== undefined) throw new HttpStatusError(400, `a streamed upload declares no ${UPLOAD_LENGTH}`);
  const s = await stateOf(p);
  if (s.kind === 'complete') {
    await drain(req); // the same stream again (its acknowledgement was lost): answered, onComplete not rerun
    sendJson(res, 200, s.completion, { [UPLOAD_OFFSET]: String(s.offset) });
    return;
  }
  if (s.kind === 'received') {
    await drain(req);
    const completion = await finishUpload(p, o, s, undefined);
    sendJson(res, 200, completion, { [UPLOAD_OFFSET]: String(completion.size) });
    return;
  }
  await mkdir(o.dir, { recursive: true });
  const hash = createHash('sha256');
  const fh = await open(p.part, 'w', 0o600); // a partial upload of an earlier stream is replaced
  let r: Awaited<ReturnType<typeof appendBody>>;
  try {
    r = await appendBody(req, fh, o.expectedSize ?? Number.MAX_SAFE_INTEGER, hash);
    await fh.sync(); // kept even when torn: an ordinary PUT resumes from its last byte
  } finally {
    await fh.close();
  }
  if (r.failure !== undefined) throw r.failure;
  if (r.aborted) return;
  const completion = await finishUpload(p, o, { kind: 'receiving', offset: r.written }, undefined, hash.digest('hex'));
  sendJson(res, 200, completion, { [UPLOAD_OFFSET]: String(completion.size) });
}

async function put(req: IncomingMessage, res: ServerResponse, o: HandleUploadOptions, p: ReturnType<typeof paths>): Promise<void> {
  if (req.headers[UPLOAD_DEFER_LENGTH] === '1') return putStreamed(req, res, o, p);
  const offset = intHeader(req, UPLOAD_OFFSET);
  const length = intHeader(req, UPLOAD_LENGTH);
  const checksum = parseChecksum(req);
  if (o.expectedSize !== undefined && length !== o.expectedSize) {
    throw new HttpStatusError(400, `upload ${o.name} is ${o.expectedSize} bytes, the client declares ${length}`);
  }
  const declared = req.headers['content-length'] === undefined ? undefined : intHeader(req, 'content-length');
  if (offset > length || (declared !== undefined && offset + declared > length)) {
    throw new HttpStatusError(400, `chunk at ${offset} of ${declared ?? '?'} bytes runs past Upload-Length ${length}`);
  }
  let s = await stateOf(p);
  if (s.kind === 'complete') {
    if (s.completion.size !== length) {
      throw new TerminalError('invalid-state', `upload ${o.name} already completed with ${s.completion.size} bytes, not ${length}`);
    }
    await drain(req); // an acknowledgement that was lost: answer it again, onComplete not rerun
    sendJson(res, 200, s.completion, { [UPLOAD_OFFSET]: String(s.offset) });
    return;
  }
  if (offset !== s.offset || (s.kind === 'received' && s.offset !== length)) {
    res.setHeader(UPLOAD_OFFSET, String(s.offset));
    throw new RetryableError('invalid-state', `upload ${o.name}: chunk starts at ${offset} but the server holds ${s.offset} bytes; resume from there`);
  }
  if (s.kind === 'receiving' && (declared === undefined || declared > 0)) {
    await mkdir(o.dir, { recursive: true });
    const fh = await open(p.part, 'a');
    let r: Awaited<ReturnType<typeof appendBody>>;
    try {
      r = await appendBody(req, fh, length - offset);
      // What arrived is kept even when the peer vanished: it is fsynced before any later HEAD can
      // report it (the lock is held until here), so a resume continues from the last byte.
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (r.failure !== undefined) throw r.failure;
    if (r.aborted) return; // nobody to answer
    s = { kind: 'receiving', offset: offset + r.written };
    if (s.offset < length) {
      res.writeHead(204, { [UPLOAD_OFFSET]: String(s.offset), 'cache-control': 'no-store' });
      res.end();
      return;
    }
  } else {
    await drain(req);
    if (s.offset < length) {
      res.writeHead(204, { [UPLOAD_OFFSET]: String(s.offset), 'cache-control': 'no-store' });
      res.end();
      return;
    }
  }
  const completion = await finishUpload(p, o, s, checksum);
  sendJson(res, 200, completion, { [UPLOAD_OFFSET]: String(completion.size) });
}

/** Removes every upload in `dir` that `keep` refuses, with every trace of it, so its name can carry another file next. */
export async function discardUploads(dir: string, keep: (name: string) => boolean): Promise<string[]> {
  const names = new Set((await readdir(dir).catch(() => [] as string[])).map((f) => f.replace(/\.(part|complete)$/, '')));
  const dropped = [...names].filter((n) => !keep(n));
  for (const p of dropped.map((n) => paths(dir, n))) {
    await withLock(p.final, () => Promise.all([rm(p.part, { force: true }), rm(p.final, { force: true }), rm(p.marker, { force: true })]).then(() => {}));
  }
  return dropped;
}

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
 * Uploads the file at `path` to `url` (a path on the client's server served by `handleUpload`),
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

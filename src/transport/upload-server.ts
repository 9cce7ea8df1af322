// The receiving half of a resumable upload (protocol: upload-protocol.ts): HEAD reports the bytes
// held durably, PUT appends a chunk (fsynced before it is acknowledged) or takes a whole streamed
// file; a complete, SHA-256-verified file is handed to `onComplete` before the client is answered,
// and the acknowledgement is kept so a lost answer can be given again.
import { createHash, type Hash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { KeyedMutex } from '../core/async-mutex.ts';
import { fsyncDir, readJsonIfExists, writeJsonAtomic } from '../core/atomic-file.ts';
import { RetryableError, TerminalError } from '../model/errors.ts';
import { HttpStatusError, sendError } from './http-errors.ts';
import { UPLOAD_CHECKSUM, UPLOAD_COMPLETE, UPLOAD_DEFER_LENGTH, UPLOAD_LENGTH, UPLOAD_OFFSET, type UploadCompletion } from './upload-protocol.ts';
import { sendJson } from './wire.ts';

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

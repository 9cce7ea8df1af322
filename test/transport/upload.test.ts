import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RetryableError, TerminalError } from '../../src/model/errors.ts';
import { createMtlsClient, createMtlsServer, type MtlsClient, type MtlsServer } from '../../src/transport/mtls.ts';
import { uploadFile, uploadStream } from '../../src/transport/upload-client.ts';
import type { UploadCompletion } from '../../src/transport/upload-protocol.ts';
import { handleUpload } from '../../src/transport/upload-server.ts';
import { makePki, recordingLogger, startCuttingProxy, tempDir, type Pki } from './helpers.ts';

let pki: Pki;
let server: MtlsServer;
let serverDir: { path: string; cleanup(): Promise<void> };
let srcDir: { path: string; cleanup(): Promise<void> };
// Each test installs what the replica does with a complete upload.
let onComplete: (name: string, path: string) => Promise<void> = async () => {};

beforeAll(async () => {
  pki = makePki();
  serverDir = await tempDir('upload-server');
  srcDir = await tempDir('upload-src');
  server = await createMtlsServer(
    { ca: pki.ca.certPem, cert: pki.server.certPem, key: pki.server.keyPem, log: recordingLogger() },
    async (req, res) => {
      const name = decodeURIComponent(new URL(req.url!, 'https://x').pathname.replace(/^\/uploads\//, ''));
      await handleUpload(req, res, { dir: serverDir.path, name, onComplete: (path) => onComplete(name, path) });
    },
  );
});
afterAll(async () => {
  await server?.close();
  await serverDir?.cleanup();
  await srcDir?.cleanup();
});

function clientFor(port = server.port): MtlsClient {
  const c = pki.client('hv1.contoso.com');
  return createMtlsClient({ ca: pki.ca.certPem, cert: c.certPem, key: c.keyPem, baseUrl: `https://127.0.0.1:${port}` });
}

async function sourceFile(name: string, size: number): Promise<{ path: string; sha256: string }> {
  const data = randomBytes(size);
  const path = join(srcDir.path, name);
  await writeFile(path, data);
  return { path, sha256: createHash('sha256').update(data).digest('hex') };
}

const sha256Of = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

describe('resumable durable upload', () => {
  it('a 20 MiB upload cut mid-way resumes where the server stopped; acked only after onComplete', async () => {
    const src = await sourceFile('log-20m', 20 << 20);
    const calls: { path: string; sha256: string }[] = [];
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started!: () => void;
    const onCompleteStarted = new Promise<void>((r) => (started = r));
    onComplete = async (_name, path) => {
      order.push('onComplete:start');
      calls.push({ path, sha256: await sha256Of(path) });
      started();
      await gate; // the replica is still making the log durable
      order.push('onComplete:end');
    };
    // Cut the connection after ~10 MiB from the client, inside the 6th 2 MiB chunk.
    const proxy = await startCuttingProxy(server.port, 10 << 20, 1);
    const client = clientFor(proxy.port);
    const progress: number[] = [];
    try {
      const upload = uploadFile(client, src.path, '/uploads/log-20m', {
        chunkSize: 2 << 20,
        retryDelayMs: 1,
        onProgress: (done) => progress.push(done),
      }).then((r) => {
        order.push('ack');
        return r;
      });
      await onCompleteStarted;
      await new Promise((r) => setTimeout(r, 100)); // give a premature ack every chance to arrive
      expect(order).toEqual(['onComplete:start']);
      release();
      const result = await upload;

      expect(proxy.cutsDone()).toBe(1);
      expect(order).toEqual(['onComplete:start', 'onComplete:end', 'ack']);
      expect(calls).toEqual([{ path: join(serverDir.path, 'log-20m'), sha256: src.sha256 }]);
      expect(result.sha256).toBe(src.sha256);
      expect(result.size).toBe(20 << 20);
      // Two attempts; the second started where the server's durable data ended, not at zero.
      expect(result.startedAt).toHaveLength(2);
      expect(result.startedAt[0]).toBe(0);
      expect(result.startedAt[1]).toBeGreaterThan(8 << 20);
      expect(client.counters.bytesSent).toBeLessThan(1.2 * (20 << 20));
      expect(progress.at(-1)).toBe(20 << 20);
      expect(await sha256Of(join(serverDir.path, 'log-20m'))).toBe(src.sha256);
      console.log(
        `20 MiB upload with one cut: ${client.counters.bytesSent} body bytes sent (${(client.counters.bytesSent / (20 << 20)).toFixed(3)}x), ` +
          `resumed at ${result.startedAt[1]}, ${client.counters.requests} requests`,
      );
    } finally {
      client.close();
      await proxy.close();
    }
  });

  it('gives up after `retries` failures in a row without progress', async () => {
    const src = await sourceFile('log-hopeless', 1 << 20);
    const proxy = await startCuttingProxy(server.port, 100 << 10, 100); // cuts inside every chunk
    const flaky = clientFor(proxy.port);
    try {
      const e = await uploadFile(flaky, src.path, '/uploads/log-hopeless', { chunkSize: 256 << 10, retries: 2, retryDelayMs: 1 }).catch((x: unknown) => x);
      expect(RetryableError.is(e) && e.code).toBe('network');
      expect(proxy.cutsDone()).toBe(3);
    } finally {
      flaky.close();
      await proxy.close();
    }
  });

  it('a later call resumes an upload an earlier call gave up on, sending only the rest', async () => {
    const size = 3 << 20;
    const src = await sourceFile('log-giveup', size);
    let completions = 0;
    onComplete = async () => void completions++;
    const proxy = await startCuttingProxy(server.port, 1 << 20, 1);
    const flaky = clientFor(proxy.port);
    const direct = clientFor();
    try {
      await expect(uploadFile(flaky, src.path, '/uploads/log-giveup', { chunkSize: 256 << 10, retries: 0 })).rejects.toMatchObject({ code: 'network' });
      const r = await uploadFile(direct, src.path, '/uploads/log-giveup', { chunkSize: 256 << 10 });
      expect(r.startedAt[0]).toBeGreaterThanOrEqual(512 << 10);
      expect(direct.counters.bytesSent).toBe(size - r.startedAt[0]);
      expect(r.sha256).toBe(src.sha256);
      expect(await sha256Of(join(serverDir.path, 'log-giveup'))).toBe(src.sha256);
      expect(completions).toBe(1);
    } finally {
      flaky.close();
      direct.close();
      await proxy.close();
    }
  });

  it('a damaged partial file fails the checksum (422) and the upload restarts from zero', async () => {
    const size = 1 << 20;
    const src = await sourceFile('log-flip', size);
    let completions = 0;
    onComplete = async () => void completions++;
    const proxy = await startCuttingProxy(server.port, 600 << 10, 1);
    const flaky = clientFor(proxy.port);
    const direct = clientFor();
    try {
      await expect(uploadFile(flaky, src.path, '/uploads/log-flip', { chunkSize: 128 << 10, retries: 0 })).rejects.toMatchObject({ code: 'network' });
      // Flip a byte of what the server holds, as a bad disk would.
      const fh = await open(join(serverDir.path, 'log-flip.part'), 'r+');
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, 1000);
      b[0] ^= 0xff;
      await fh.write(b, 0, 1, 1000);
      await fh.close();

      const r = await uploadFile(direct, src.path, '/uploads/log-flip', { chunkSize: 128 << 10, retryDelayMs: 1 });
      expect(r.startedAt).toHaveLength(2);
      expect(r.startedAt[0]).toBeGreaterThan(0);
      expect(r.startedAt[1]).toBe(0);
      expect(await sha256Of(join(serverDir.path, 'log-flip'))).toBe(src.sha256);
      expect(completions).toBe(1);
    } finally {
      flaky.close();
      direct.close();
      await proxy.close();
    }
  });

  it('onComplete failing is not an ack: the retry calls it again, then acks', async () => {
    const src = await sourceFile('log-busy', 300_000);
    let completions = 0;
    onComplete = async () => {
      if (++completions === 1) throw new RetryableError('busy', 'replica store busy');
    };
    const c = clientFor();
    try {
      const r = await uploadFile(c, src.path, '/uploads/log-busy', { chunkSize: 100_000, retryDelayMs: 1 });
      expect(r.sha256).toBe(src.sha256);
      expect(completions).toBe(2);
      expect(c.counters.bytesSent).toBe(300_000); // the retry re-sent nothing
    } finally {
      c.close();
    }
  });

  it('a lost acknowledgement is answered again without running onComplete twice', async () => {
    const src = await sourceFile('log-again', 5000);
    let completions = 0;
    onComplete = async () => void completions++;
    const c = clientFor();
    try {
      await uploadFile(c, src.path, '/uploads/log-again');
      const again = await uploadFile(c, src.path, '/uploads/log-again');
      expect(again.sha256).toBe(src.sha256);
      // The final PUT repeated verbatim gets the same acknowledgement.
      const put = await c.request('PUT', '/uploads/log-again', Buffer.alloc(0), {
        'upload-offset': '5000',
        'upload-length': '5000',
      });
      expect(put.json<UploadCompletion>()).toEqual({ complete: true, size: 5000, sha256: src.sha256 });
      expect(completions).toBe(1);
      // A different file under a completed name is refused, not silently acked.
      const other = await sourceFile('log-again-other', 5000);
      await expect(uploadFile(c, other.path, '/uploads/log-again')).rejects.toSatisfy(
        (e: unknown) => TerminalError.is(e) && e.code === 'invalid-state',
      );
    } finally {
      c.close();
    }
  });

  it('an empty file uploads; bad requests are refused with clear errors', async () => {
    const src = await sourceFile('log-empty', 0);
    let completions = 0;
    onComplete = async () => void completions++;
    const c = clientFor();
    try {
      expect((await uploadFile(c, src.path, '/uploads/log-empty')).size).toBe(0);
      expect(completions).toBe(1);
      const bad = (headers: Record<string, string>, path = '/uploads/log-bad') =>
        c.request('PUT', path, Buffer.alloc(10), headers).catch((e: unknown) => e);
      expect(await bad({ 'upload-offset': 'x', 'upload-length': '10' })).toMatchObject({ code: 'invalid-argument', message: expect.stringMatching(/upload-offset/) });
      expect(await bad({ 'upload-offset': '0', 'upload-length': '5' })).toMatchObject({ code: 'invalid-argument', message: expect.stringMatching(/runs past/) });
      const gap = await bad({ 'upload-offset': '4', 'upload-length': '20' });
      expect(RetryableError.is(gap) && gap.code).toBe('invalid-state');
      expect(await bad({ 'upload-offset': '0', 'upload-length': '10' }, '/uploads/..%2Fescape')).toMatchObject({ code: 'invalid-argument' });
      expect(await c.request('DELETE', '/uploads/log-bad').catch((e: unknown) => e)).toMatchObject({ code: 'invalid-argument', message: expect.stringMatching(/not allowed/) });
    } finally {
      c.close();
    }
  });

  it('a streamed upload (length deferred) completes at its end; a torn one keeps its bytes and the ordinary upload of the same file sends only the rest', async () => {
    const src = await sourceFile('log-stream', 12 << 20);
    const data = await readFile(src.path);
    const completed: string[] = [];
    onComplete = async (_name, path) => void completed.push(await sha256Of(path));
    // Produced as a streamed delta is: pieces of 256 KiB, the whole length known only at the end.
    const pieces = async function* (bytes: Buffer) {
      for (let at = 0; at < bytes.length; at += 256 << 10) yield bytes.subarray(at, at + (256 << 10));
    };
    const c = clientFor();
    try {
      const ack = await uploadStream(c, '/uploads/log-stream', pieces(data));
      expect(ack).toEqual({ complete: true, size: data.length, sha256: src.sha256 });
      expect(completed).toEqual([src.sha256]);
      // The same stream again (a lost acknowledgement): answered, onComplete not run again.
      expect(await uploadStream(c, '/uploads/log-stream', pieces(data))).toEqual(ack);
      expect(completed).toHaveLength(1);
    } finally {
      c.close();
    }

    // Torn 5 MiB in: the replica keeps what arrived (fsynced), nothing completes.
    const torn = await sourceFile('log-torn', 12 << 20);
    const tornData = await readFile(torn.path);
    completed.length = 0;
    const proxy = await startCuttingProxy(server.port, 5 << 20, 1);
    const cut = clientFor(proxy.port);
    try {
      const e = await uploadStream(cut, '/uploads/log-torn', pieces(tornData)).catch((x: unknown) => x);
      expect(RetryableError.is(e), String(e)).toBe(true);
      expect(completed).toEqual([]);
      const head = await cut.request('HEAD', '/uploads/log-torn');
      const held = Number(head.headers['upload-offset']);
      expect(held).toBeGreaterThan(0);
      expect(held).toBeLessThan(tornData.length);
      const r = await uploadFile(cut, torn.path, '/uploads/log-torn', { retryDelayMs: 1 });
      expect(r.startedAt[0]).toBe(held); // resumed: only the rest was sent
      expect(completed).toEqual([torn.sha256]);
    } finally {
      cut.close();
      await proxy.close();
    }

    // A new stream replaces a partial one of other bytes (a cut abandoned before it was sealed).
    const other = await sourceFile('log-replaced', 3 << 20);
    const proxy2 = await startCuttingProxy(server.port, 1 << 20, 1);
    const c2 = clientFor(proxy2.port);
    try {
      await uploadStream(c2, '/uploads/log-replaced', pieces(randomBytes(3 << 20))).catch(() => undefined);
      completed.length = 0;
      const ack = await uploadStream(c2, '/uploads/log-replaced', pieces(await readFile(other.path)));
      expect(ack.sha256).toBe(other.sha256);
      expect(completed).toEqual([other.sha256]);
      // Refused: a streamed upload that does not start at 0, or that declares a length.
      const bad = (headers: Record<string, string>) => c2.request('PUT', '/uploads/log-bad-stream', Buffer.alloc(10), headers).catch((x: unknown) => x);
      expect(await bad({ 'upload-offset': '4', 'upload-defer-length': '1' })).toMatchObject({ code: 'invalid-argument', message: expect.stringMatching(/offset 0/) });
      expect(await bad({ 'upload-offset': '0', 'upload-defer-length': '1', 'upload-length': '10' })).toMatchObject({ code: 'invalid-argument' });
    } finally {
      c2.close();
      await proxy2.close();
    }
  });
});

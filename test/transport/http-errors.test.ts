import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RetryableError, TerminalError, type ErrorCode } from '../../src/model/errors.ts';
import { errorFromSocket, sendError } from '../../src/transport/http-errors.ts';
import { createMtlsClient, createMtlsServer, type MtlsClient, type MtlsServer } from '../../src/transport/mtls.ts';
import { readJson } from '../../src/transport/wire.ts';
import { makePki, recordingLogger } from './helpers.ts';

// Errors the handler throws, by name in the URL (/throw/<n>).
const thrown: unknown[] = [];
let server: MtlsServer;
let client: MtlsClient;

beforeAll(async () => {
  const pki = makePki();
  server = await createMtlsServer(
    { ca: pki.ca.certPem, cert: pki.server.certPem, key: pki.server.keyPem, log: recordingLogger() },
    async (req, res) => {
      const url = new URL(req.url!, 'https://x');
      const [, kind, arg] = url.pathname.split('/');
      if (kind === 'status') {
        // A raw status with an optional body, as a foreign or older server might answer.
        const body = url.searchParams.get('body') ?? '';
        res.writeHead(Number(arg), { 'content-type': 'application/json' });
        return res.end(body);
      }
      if (kind === 'throw') throw thrown[Number(arg)];
      if (kind === 'json') return sendError(res, new TerminalError('invalid-state', JSON.stringify(await readJson(req, 64))));
    },
  );
  const mine = pki.client('c');
  client = createMtlsClient({ ca: pki.ca.certPem, cert: mine.certPem, key: mine.keyPem, baseUrl: server.url });
});
afterAll(async () => {
  client?.close();
  await server?.close();
});

async function failure(p: Promise<unknown>): Promise<{ kind: string; code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    const kind = TerminalError.is(e) ? 'terminal' : RetryableError.is(e) ? 'retryable' : 'other';
    return { kind, code: (e as { code: string }).code, message: (e as Error).message };
  }
  throw new Error('expected a failure');
}

describe('HTTP status -> typed error (client side)', () => {
  const cases: { reason: string; status: number; body?: string; kind: string; code: ErrorCode }[] = [
    { reason: 'unauthenticated', status: 401, kind: 'terminal', code: 'authentication' },
    { reason: 'not an allowed primary', status: 403, kind: 'terminal', code: 'authorization' },
    { reason: 'unknown relationship', status: 404, kind: 'terminal', code: 'not-found' },
    { reason: 'conflict', status: 409, kind: 'terminal', code: 'invalid-state' },
    {
      reason: 'conflict the server marks retryable',
      status: 409,
      body: JSON.stringify({ error: { code: 'invalid-state', message: 'resume at 5', retryable: true } }),
      kind: 'retryable',
      code: 'invalid-state',
    },
    {
      reason: 'a 409 keeps a code it stands for',
      status: 409,
      body: JSON.stringify({ error: { code: 'broken-chain', message: 'gap', retryable: false } }),
      kind: 'terminal',
      code: 'broken-chain',
    },
    {
      reason: 'a body code the status does not stand for is ignored',
      status: 404,
      body: JSON.stringify({ error: { code: 'low-disk', message: 'x', retryable: true } }),
      kind: 'terminal',
      code: 'not-found',
    },
    { reason: 'bad log', status: 422, kind: 'retryable', code: 'integrity' },
    { reason: 'busy', status: 503, kind: 'retryable', code: 'busy' },
    { reason: 'replica disk full', status: 507, kind: 'retryable', code: 'low-disk' },
    { reason: 'internal error', status: 500, kind: 'retryable', code: 'network' },
    { reason: 'bad gateway', status: 502, kind: 'retryable', code: 'network' },
    { reason: 'bad request', status: 400, kind: 'terminal', code: 'invalid-argument' },
    { reason: 'too large', status: 413, kind: 'terminal', code: 'invalid-argument' },
  ];
  it.each(cases)('$status $reason -> $kind $code', async ({ status, body, kind, code }) => {
    const q = body === undefined ? '' : `?body=${encodeURIComponent(body)}`;
    const f = await failure(client.request('GET', `/status/${status}${q}`));
    expect(f).toMatchObject({ kind, code });
    expect(f.message).toContain(`/status/${status}`);
  });

  it('a 2xx/3xx resolves', async () => {
    expect((await client.request('GET', '/status/204')).status).toBe(204);
  });
});

describe('sendError round trip (server throws, client gets the same class and code)', () => {
  const codes: ErrorCode[] = [
    'network', 'low-disk', 'low-memory', 'busy', 'integrity',
    'broken-chain', 'invalid-state', 'authentication', 'authorization', 'not-found', 'invalid-argument',
  ];
  const retryableCodes = new Set<ErrorCode>(['network', 'low-disk', 'low-memory', 'busy', 'integrity']);
  it.each(codes)('%s', async (code) => {
    const E = retryableCodes.has(code) ? RetryableError : TerminalError;
    thrown.push(new E(code, `replica says ${code}`));
    const f = await failure(client.request('POST', `/throw/${thrown.length - 1}`));
    expect(f).toMatchObject({ kind: retryableCodes.has(code) ? 'retryable' : 'terminal', code });
    expect(f.message).toContain(`replica says ${code}`);
  });

  it('node system errors: a full disk is low-disk, anything else a retryable 500', async () => {
    thrown.push(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
    expect(await failure(client.request('POST', `/throw/${thrown.length - 1}`))).toMatchObject({ kind: 'retryable', code: 'low-disk' });
    thrown.push(new Error('bug'));
    expect(await failure(client.request('POST', `/throw/${thrown.length - 1}`))).toMatchObject({
      kind: 'retryable',
      code: 'network',
      message: expect.stringMatching(/internal error: bug/),
    });
  });

  it('readJson: over the limit is 413, not JSON is 400', async () => {
    expect(await failure(client.request('POST', '/json', { big: 'x'.repeat(100) }))).toMatchObject({
      kind: 'terminal',
      code: 'invalid-argument',
      message: expect.stringMatching(/exceeds the 64-byte limit/),
    });
    expect(await failure(client.request('POST', '/json', Buffer.from('{nope')))).toMatchObject({
      kind: 'terminal',
      code: 'invalid-argument',
      message: expect.stringMatching(/not valid JSON/),
    });
    expect(await failure(client.request('POST', '/json', { a: 1 }))).toMatchObject({ code: 'invalid-state', message: expect.stringMatching(/\{"a":1\}/) });
  });
});

describe('socket failure -> typed error', () => {
  const cases: { code: string; kind: string; as: ErrorCode }[] = [
    { code: 'ECONNREFUSED', kind: 'retryable', as: 'network' },
    { code: 'ECONNRESET', kind: 'retryable', as: 'network' },
    { code: 'ETIMEDOUT', kind: 'retryable', as: 'network' },
    { code: 'EAI_AGAIN', kind: 'retryable', as: 'network' },
    { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', kind: 'terminal', as: 'authentication' },
    { code: 'DEPTH_ZERO_SELF_SIGNED_CERT', kind: 'terminal', as: 'authentication' },
    { code: 'CERT_HAS_EXPIRED', kind: 'terminal', as: 'authentication' },
    { code: 'ERR_TLS_CERT_ALTNAME_INVALID', kind: 'terminal', as: 'authentication' },
    { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', kind: 'terminal', as: 'authentication' },
    { code: 'EPROTO', kind: 'terminal', as: 'authentication' },
    { code: 'ERR_OSSL_X509_KEY_VALUES_MISMATCH', kind: 'terminal', as: 'authentication' },
    // A byte corrupted in transit on an established connection: the peer's alert, or our own check.
    { code: 'ERR_SSL_SSL/TLS_ALERT_BAD_RECORD_MAC', kind: 'retryable', as: 'integrity' },
    { code: 'ERR_SSL_SSLV3_ALERT_BAD_RECORD_MAC', kind: 'retryable', as: 'integrity' },
    { code: 'ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC', kind: 'retryable', as: 'integrity' },
    { code: 'ERR_SSL_TLSV1_ALERT_RECORD_OVERFLOW', kind: 'retryable', as: 'integrity' },
    { code: 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', kind: 'terminal', as: 'authentication' },
  ];
  it.each(cases)('$code -> $kind $as', ({ code, kind, as }) => {
    const e = errorFromSocket(Object.assign(new Error(code), { code }), 'GET https://x/');
    expect([TerminalError.is(e) ? 'terminal' : 'retryable', e.code]).toEqual([kind, as]);
    expect(e.message).toContain('GET https://x/');
  });
});

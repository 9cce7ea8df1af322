import { createHash } from 'node:crypto';
import net from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RetryableError, TerminalError } from '../../src/model/errors.ts';
import { createAuthorizer } from '../../src/transport/authorization.ts';
import { issueCertificate } from '../../src/transport/certs.ts';
import { createMtlsClient, createMtlsServer, type AuthGrant, type MtlsServer } from '../../src/transport/mtls.ts';
import type { PeerIdentity } from '../../src/transport/peer.ts';
import { readJson, sendJson } from '../../src/transport/wire.ts';
import { makePki, recordingLogger, type Pki } from './helpers.ts';

let pki: Pki;
let foreign: Pki;
let server: MtlsServer;
const log = recordingLogger();
const seen: { peer: PeerIdentity; grant: AuthGrant | undefined }[] = [];

beforeAll(async () => {
  pki = makePki();
  foreign = makePki('foreign CA');
  server = await createMtlsServer(
    {
      ca: pki.ca.certPem,
      cert: pki.server.certPem,
      key: pki.server.keyPem,
      log,
      authorize: createAuthorizer([{ server: '*.contoso.com', storagePath: '/replicas/contoso', trustGroup: 'contoso' }], log),
    },
    async (req, res, peer, grant) => {
      seen.push({ peer, grant });
      if (req.url === '/echo-sha') {
        const h = createHash('sha256');
        let n = 0;
        for await (const c of req) {
          h.update(c as Buffer);
          n += (c as Buffer).length;
        }
        return sendJson(res, 200, { bytes: n, sha256: h.digest('hex') });
      }
      if (req.url === '/json') return sendJson(res, 200, { got: await readJson(req) });
      sendJson(res, 200, { hello: peer.commonName });
    },
  );
});
afterAll(async () => {
  await server?.close();
});

const client = (pair: { certPem: string; keyPem: string }, ca = pki.ca.certPem, baseUrl = server.url) =>
  createMtlsClient({ ca, cert: pair.certPem, key: pair.keyPem, baseUrl });

async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a failure');
}

describe('mutual TLS', () => {
  it('lets an allowed primary through, with its identity and grant', async () => {
    const c = client(pki.client('hv1.contoso.com'));
    try {
      const r = await c.request('GET', '/');
      expect(r.status).toBe(200);
      expect(r.json()).toEqual({ hello: 'hv1.contoso.com' });
      const last = seen.at(-1)!;
      expect(last.peer).toMatchObject({ commonName: 'hv1.contoso.com', altNames: ['hv1.contoso.com'] });
      expect(last.peer.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
      expect(last.grant).toEqual({ storagePath: '/replicas/contoso', trustGroup: 'contoso' });
      const j = await c.request('POST', '/json', { a: [1, 2] });
      expect(j.json()).toEqual({ got: { a: [1, 2] } });
    } finally {
      c.close();
    }
  });

  it('streams a Readable body and counts the bytes', async () => {
    const c = client(pki.client('hv1.contoso.com'));
    try {
      const data = Buffer.alloc(3 << 20, 7);
      const r = await c.request('PUT', '/echo-sha', Readable.from([data.subarray(0, 1 << 20), data.subarray(1 << 20)]), {
        'content-length': String(data.length),
      });
      expect(r.json()).toEqual({ bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
      expect(c.counters.bytesSent).toBe(data.length);
      expect(c.counters.bytesReceived).toBe(r.body.length);
      expect(c.counters.requests).toBe(1);
    } finally {
      c.close();
    }
  });

  it('refuses a certificate from our CA that matches no allowed primary: 403, authorization, logged', async () => {
    const before = log.entries.length;
    const calls = seen.length;
    const c = client(pki.client('hv1.fabrikam.com'));
    try {
      const e = await failure(c.request('GET', '/'));
      expect(TerminalError.is(e) && e.code).toBe('authorization');
      expect((e as Error).message).toMatch(/"hv1\.fabrikam\.com" is not an allowed primary server/);
    } finally {
      c.close();
    }
    expect(seen.length).toBe(calls); // the handler never ran
    const refusal = log.entries.slice(before).find((l) => l.fields.peer === 'hv1.fabrikam.com');
    expect(refusal).toMatchObject({ level: 'warn', fields: { fingerprint256: expect.stringMatching(/:/), reason: expect.stringMatching(/no allowedPrimaries entry/) } });
  });

  it('refuses a certificate from another CA: authentication (never a retryable network error), logged', async () => {
    const before = log.entries.length;
    const c = client(foreign.client('hv1.contoso.com'));
    try {
      // Repeated and with a 1 MiB body: the refusal must not degrade into a connection reset.
      for (let i = 0; i < 5; i++) {
        const e = await failure(c.request('PUT', '/echo-sha', Buffer.alloc(1 << 20)));
        expect(TerminalError.is(e) && e.code, String(e)).toBe('authentication');
        expect((e as Error).message).toMatch(/client certificate not trusted/);
      }
    } finally {
      c.close();
    }
    const refusal = log.entries.slice(before).find((l) => l.msg.includes('client certificate not accepted'));
    expect(refusal?.fields).toMatchObject({ peer: 'hv1.contoso.com', fingerprint256: expect.stringMatching(/:/) });
  });

  it('refuses a client without a certificate', async () => {
    const c = createMtlsClient({ ca: pki.ca.certPem, cert: '', key: '', baseUrl: server.url });
    try {
      const e = await failure(c.request('GET', '/'));
      expect(TerminalError.is(e) && e.code, String(e)).toBe('authentication');
      expect((e as Error).message).toMatch(/no client certificate/);
    } finally {
      c.close();
    }
  });

  it('a client that does not trust the server certificate fails with authentication', async () => {
    const c = client(foreign.client('hv1.contoso.com'), foreign.ca.certPem);
    try {
      const e = await failure(c.request('GET', '/'));
      expect(TerminalError.is(e) && e.code, String(e)).toBe('authentication');
    } finally {
      c.close();
    }
  });

  it('a server certificate that does not name the host fails with authentication', async () => {
    const misnamed = issueCertificate(pki.ca, { commonName: 'elsewhere', altNames: ['elsewhere.example'], usage: 'server' });
    const other = await createMtlsServer({ ca: pki.ca.certPem, cert: misnamed.certPem, key: misnamed.keyPem, log }, (_q, res) => res.end());
    const c = client(pki.client('hv1.contoso.com'), pki.ca.certPem, other.url);
    try {
      const e = await failure(c.request('GET', '/'));
      expect(TerminalError.is(e) && e.code, String(e)).toBe('authentication');
      expect((e as Error).message).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID/);
    } finally {
      c.close();
      await other.close();
    }
  });

  it('connection refused is a retryable network error', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const c = client(pki.client('hv1.contoso.com'), pki.ca.certPem, `https://127.0.0.1:${port}`);
    try {
      const e = await failure(c.request('GET', '/'));
      expect(RetryableError.is(e) && e.code, String(e)).toBe('network');
      expect((e as Error).message).toMatch(/ECONNREFUSED/);
    } finally {
      c.close();
    }
  });

  it('close() returns despite idle keep-alive connections, and the port stops answering', async () => {
    const s = await createMtlsServer({ ca: pki.ca.certPem, cert: pki.server.certPem, key: pki.server.keyPem, log }, (_q, res) =>
      sendJson(res, 200, {}),
    );
    const c = client(pki.client('hv1.contoso.com'), pki.ca.certPem, s.url);
    try {
      await c.request('GET', '/');
      await c.request('GET', '/'); // the keep-alive socket stays open in the client's pool
      await s.close();
      const e = await failure(c.request('GET', '/'));
      expect(RetryableError.is(e) && e.code, String(e)).toBe('network');
    } finally {
      c.close();
    }
  });
});

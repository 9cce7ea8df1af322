// uploadFile's `pace` hook (a bandwidth cap's way in): every body byte of every PUT is announced
// in slices of at most PACE_SLICE before it is sent, also across a connection cut and its resume,
// and the file arrives intact.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMtlsClient, createMtlsServer, type MtlsClient, type MtlsServer } from '../../src/transport/mtls.ts';
import { PACE_SLICE, uploadFile } from '../../src/transport/upload-client.ts';
import { handleUpload } from '../../src/transport/upload-server.ts';
import { makePki, recordingLogger, startCuttingProxy, tempDir, type Pki } from './helpers.ts';

let pki: Pki;
let server: MtlsServer;
let serverDir: { path: string; cleanup(): Promise<void> };
let srcDir: { path: string; cleanup(): Promise<void> };

beforeAll(async () => {
  pki = makePki();
  serverDir = await tempDir('pace-server');
  srcDir = await tempDir('pace-src');
  server = await createMtlsServer({ ca: pki.ca.certPem, cert: pki.server.certPem, key: pki.server.keyPem, log: recordingLogger() }, async (req, res) => {
    const name = decodeURIComponent(new URL(req.url!, 'https://x').pathname.replace(/^\/uploads\//, ''));
    await handleUpload(req, res, { dir: serverDir.path, name, onComplete: () => {} });
  });
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

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('uploadFile with pace', () => {
  it('announces every body byte in slices of at most PACE_SLICE, waiting for each', async () => {
    const data = randomBytes(5 * (1 << 20) + 12345);
    const src = join(srcDir.path, 'paced');
    await writeFile(src, data);
    const client = clientFor();
    const slices: number[] = [];
    try {
      const r = await uploadFile(client, src, '/uploads/paced', {
        chunkSize: 2 << 20,
        // Each slice waits a turn of the event loop, as a bucket's sleep would.
        pace: async (n) => {
          slices.push(n);
          await new Promise((res) => setImmediate(res));
        },
      });
      expect(r.size).toBe(data.length);
      expect(sha(await readFile(join(serverDir.path, 'paced')))).toBe(sha(data));
      expect(slices.reduce((a, b) => a + b, 0)).toBe(data.length);
      expect(client.counters.bytesSent).toBe(data.length);
      expect(Math.max(...slices)).toBeLessThanOrEqual(PACE_SLICE);
      expect(slices.length).toBeGreaterThanOrEqual(Math.ceil(data.length / PACE_SLICE));
    } finally {
      client.close();
    }
  });

  it('a cut connection: the resumed upload paces what it sends again, and nothing goes out unannounced', async () => {
    const data = randomBytes(6 << 20);
    const src = join(srcDir.path, 'paced-cut');
    await writeFile(src, data);
    const proxy = await startCuttingProxy(server.port, 3 << 20, 1);
    const client = clientFor(proxy.port);
    let paced = 0;
    try {
      await uploadFile(client, src, '/uploads/paced-cut', { chunkSize: 2 << 20, retryDelayMs: 1, pace: async (n) => void (paced += n) });
      expect(proxy.cutsDone()).toBe(1);
      expect(sha(await readFile(join(serverDir.path, 'paced-cut')))).toBe(sha(data));
      // A slice or two may be announced and then lost with the connection, never the reverse.
      expect(paced).toBeGreaterThanOrEqual(client.counters.bytesSent);
      expect(paced - client.counters.bytesSent).toBeLessThanOrEqual(2 * PACE_SLICE);
      expect(client.counters.bytesSent).toBeGreaterThan(data.length);
    } finally {
      client.close();
      await proxy.close();
    }
  });
});

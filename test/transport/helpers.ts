// Shared fixtures for the transport tests: a throw-away PKI, a logger that records, temp dirs and
// a TCP proxy that cuts connections mid-stream (real sockets: the fault is injected at the edge).
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, issueCertificate, type CertKeyPair } from '../../src/transport/certs.ts';
import type { LogFields, Logger } from '../../src/transport/logger.ts';

export interface Pki {
  readonly ca: CertKeyPair;
  readonly server: CertKeyPair;
  /** A client certificate from the same CA. */
  client(commonName: string, altNames?: string[]): CertKeyPair;
}

export function makePki(caName = 'test CA'): Pki {
  const ca = createCa({ commonName: caName });
  const server = issueCertificate(ca, {
    commonName: 'replica.contoso.com',
    altNames: ['replica.contoso.com', 'localhost', '127.0.0.1', '::1'],
    usage: 'server',
  });
  return {
    ca,
    server,
    client: (commonName, altNames = [commonName]) => issueCertificate(ca, { commonName, altNames, usage: 'client' }),
  };
}

export interface LogEntry {
  readonly level: 'info' | 'warn' | 'error';
  readonly msg: string;
  readonly fields: LogFields;
}

export function recordingLogger(): Logger & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at = (level: LogEntry['level']) => (msg: string, fields: LogFields = {}) => void entries.push({ level, msg, fields });
  return { entries, info: at('info'), warn: at('warn'), error: at('error') };
}

export async function tempDir(prefix: string): Promise<{ path: string; cleanup(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `drsite-${prefix}-`));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/**
 * Forwards 127.0.0.1:<port> to `targetPort`. After `cutAfter` bytes from clients (counted across
 * connections since the last cut) it destroys both sides of the current connection, `cuts` times.
 */
export async function startCuttingProxy(
  targetPort: number,
  cutAfter: number,
  cuts = 1,
): Promise<{ port: number; cutsDone(): number; close(): Promise<void> }> {
  let sinceCut = 0;
  let done = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => sockets.delete(s));
    }
    client.on('data', (d: Buffer) => {
      sinceCut += d.length;
      if (done < cuts && sinceCut >= cutAfter) {
        done++;
        sinceCut = 0;
        client.destroy();
        upstream.destroy();
        return;
      }
      if (!upstream.write(d)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.pipe(client);
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    cutsDone: () => done,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      }),
  };
}

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TerminalError } from '../../src/model/errors.ts';
import {
  createCa,
  initCertificates,
  issueCertificate,
  loadCertBundle,
  writeCertBundle,
} from '../../src/transport/certs.ts';
import { tempDir } from './helpers.ts';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('certificates', () => {
  const ca = createCa({ commonName: 'unit CA', days: 30 });

  it('creates a CA that OpenSSL accepts as a CA', () => {
    const x = new X509Certificate(ca.certPem);
    expect(x.ca).toBe(true);
    expect(x.subject).toBe('CN=unit CA');
    expect(x.checkIssued(x)).toBe(true);
    expect(createPrivateKey(ca.keyPem).asymmetricKeyDetails?.modulusLength).toBe(2048);
  });

  it('issues a leaf with DNS and IP SANs, verifiable by the CA, with the requested usage', () => {
    const leaf = issueCertificate(ca, {
      commonName: 'hv1.contoso.com',
      altNames: ['hv1.contoso.com', 'localhost', '127.0.0.1', '::1'],
      usage: 'server',
    });
    const x = new X509Certificate(leaf.certPem);
    const caX = new X509Certificate(ca.certPem);
    expect(x.ca).toBe(false);
    expect(x.checkIssued(caX)).toBe(true);
    expect(x.verify(caX.publicKey)).toBe(true);
    expect(x.checkHost('hv1.contoso.com')).toBe('hv1.contoso.com');
    expect(x.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(x.checkIP('::1')).toBe('::1');
    expect(x.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // serverAuth only
    expect(x.checkPrivateKey(createPrivateKey(leaf.keyPem))).toBe(true);
    const both = new X509Certificate(issueCertificate(ca, { commonName: 'a', altNames: [], usage: 'both' }).certPem);
    expect([...(both.keyUsage ?? [])].sort()).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  });

  it('refuses a SAN that is neither a DNS name nor an IP, and a bad lifetime', () => {
    expect(() => issueCertificate(ca, { commonName: 'x', altNames: ['not a name'], usage: 'client' })).toThrow(TerminalError);
    expect(() => createCa({ commonName: 'x', days: 0 })).toThrow(/whole number of days/);
  });

  it('writes and loads a bundle; key files are 0600', async () => {
    const dir = await tempDir('certs');
    cleanups.push(dir.cleanup);
    const leaf = issueCertificate(ca, { commonName: 'hv1', altNames: ['hv1'], usage: 'both' });
    await writeCertBundle(dir.path, 'hv1', leaf, ca.certPem);
    expect((await stat(join(dir.path, 'hv1.key'))).mode & 0o777).toBe(0o600);
    expect(await loadCertBundle(dir.path, 'hv1')).toEqual({ ca: ca.certPem, cert: leaf.certPem, key: leaf.keyPem });
    await expect(loadCertBundle(dir.path, 'hv2')).rejects.toMatchObject({ code: 'not-found' });
    await expect(loadCertBundle(dir.path, '../etc')).rejects.toMatchObject({ code: 'invalid-argument' });
  });

  it('initCertificates is idempotent: the CA and valid host certificates are kept', async () => {
    const dir = await tempDir('init');
    cleanups.push(dir.cleanup);
    const first = await initCertificates(dir.path, ['hv1', 'hv2']);
    expect(first).toEqual({ caCreated: true, issued: ['hv1', 'hv2'], kept: [] });
    const caPem = await readFile(join(dir.path, 'ca.crt'), 'utf8');
    const hv1Pem = await readFile(join(dir.path, 'hv1.crt'), 'utf8');
    expect((await stat(join(dir.path, 'ca.key'))).mode & 0o777).toBe(0o600);

    const second = await initCertificates(dir.path, ['hv1', 'hv2', 'hv3']);
    expect(second).toEqual({ caCreated: false, issued: ['hv3'], kept: ['hv1', 'hv2'] });
    expect(await readFile(join(dir.path, 'ca.crt'), 'utf8')).toBe(caPem);
    expect(await readFile(join(dir.path, 'hv1.crt'), 'utf8')).toBe(hv1Pem);

    const b = await loadCertBundle(dir.path, 'hv3');
    const x = new X509Certificate(b.cert);
    expect(x.subject).toBe('CN=hv3');
    expect(x.subjectAltName).toBe('DNS:hv3, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(x.checkIssued(new X509Certificate(caPem))).toBe(true);

    // A host certificate from some other CA is replaced; the CA still is not.
    const foreign = createCa({ commonName: 'foreign' });
    await writeFile(join(dir.path, 'hv2.crt'), issueCertificate(foreign, { commonName: 'hv2', altNames: ['hv2'], usage: 'both' }).certPem);
    const third = await initCertificates(dir.path, ['hv1', 'hv2']);
    expect(third).toEqual({ caCreated: false, issued: ['hv2'], kept: ['hv1'] });
    expect(await readFile(join(dir.path, 'ca.crt'), 'utf8')).toBe(caPem);
  });
});

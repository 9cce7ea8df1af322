// X.509 certificates for mutual TLS between sites: a private CA, server/client certificates issued
// by it, and their files on disk. Keys are RSA 2048 generated natively by node:crypto (fast);
// node-forge only builds and signs the certificates, so nothing shells out to openssl.
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';
import { fsyncDir } from '../core/atomic-file.ts';
import { TerminalError } from '../model/errors.ts';

/** A PEM certificate and its PEM (PKCS#8) private key. */
export interface CertKeyPair {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface CreateCaOptions {
  readonly commonName: string;
  /** @default 3650 */
  readonly days?: number;
}

export interface IssueOptions {
  readonly commonName: string;
  /** DNS names and IP addresses (v4 or v6) put in subjectAltName. */
  readonly altNames: readonly string[];
  /** Extended key usage: serverAuth, clientAuth or both. */
  readonly usage: 'server' | 'client' | 'both';
  /** @default 825 */
  readonly days?: number;
}

/** What `createMtlsServer` / `createMtlsClient` take: the trusted CA plus this party's pair. */
export interface CertBundle {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

const DAY_MS = 86_400_000;
// Certificates start one hour in the past so a peer whose clock runs slightly behind accepts them.
const BACKDATE_MS = 3_600_000;

function newKeyPair(): { publicKey: forge.pki.PublicKey; privateKey: forge.pki.rsa.PrivateKey; keyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return {
    publicKey: forge.pki.publicKeyFromPem(publicKey),
    privateKey: forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey,
    keyPem: privateKey,
  };
}

// RFC 5280: a positive serial of at most 20 octets; random so two CAs never collide.
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = (b[0] & 0x7f) | 0x01;
  return b.toString('hex');
}

function validity(cert: forge.pki.Certificate, days: number): void {
  const now = Date.now();
  cert.validity.notBefore = new Date(now - BACKDATE_MS);
  cert.validity.notAfter = new Date(now + days * DAY_MS);
}

function checkDays(days: number): number {
  if (!Number.isInteger(days) || days < 1) {
    throw new TerminalError('invalid-argument', `certificate lifetime must be a whole number of days >= 1, got ${days}`);
  }
  return days;
}

function checkCommonName(cn: string): string {
  if (cn.length === 0 || cn.length > 64) {
    throw new TerminalError('invalid-argument', `certificate common name must be 1-64 characters, got "${cn}"`);
  }
  return cn;
}

/** A self-signed certificate authority for one drsite deployment. */
export function createCa(opts: CreateCaOptions): CertKeyPair {
  const days = checkDays(opts.days ?? 3650);
  const keys = newKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serialNumber();
  validity(cert, days);
  const attrs = [{ name: 'commonName', value: checkCommonName(opts.commonName) }];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: keys.keyPem };
}

/** A leaf certificate signed by `ca`, for a server, a client or both (an agent is both). */
export function issueCertificate(ca: CertKeyPair, opts: IssueOptions): CertKeyPair {
  const days = checkDays(opts.days ?? 825);
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem) as forge.pki.rsa.PrivateKey;
  const keys = newKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serialNumber();
  validity(cert, days);
  cert.setSubject([{ name: 'commonName', value: checkCommonName(opts.commonName) }]);
  cert.setIssuer(caCert.subject.attributes);
  const altNames = opts.altNames.map((n) => {
    if (isIP(n)) return { type: 7, ip: n };
    if (!/^[A-Za-z0-9*]([A-Za-z0-9.*-]*[A-Za-z0-9])?$/.test(n)) {
      throw new TerminalError('invalid-argument', `subjectAltName "${n}" is neither a DNS name nor an IP address`);
    }
    return { type: 2, value: n };
  });
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    {
      name: 'extKeyUsage',
      serverAuth: opts.usage !== 'client',
      clientAuth: opts.usage !== 'server',
    },
    ...(altNames.length > 0 ? [{ name: 'subjectAltName', altNames }] : []),
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: keys.keyPem };
}

// Names become file names: refuse anything that could leave the directory.
function checkFileName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || name.includes('..')) {
    throw new TerminalError('invalid-argument', `certificate name "${name}" is not a safe file name`);
  }
  return name;
}

// Write-temp, fsync, rename, fsync-dir: a crash leaves the old file or the new one, and key
// material is never readable by others, not even for the instant before a chmod.
async function writeSecureFile(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const h = await open(tmp, 'w', mode);
  try {
    await h.chmod(mode); // the umask may have narrowed or the file pre-existed
    await h.writeFile(data);
    await h.sync();
  } finally {
    await h.close();
  }
  await rename(tmp, path);
}

/**
 * Writes `ca.crt` (when `caCertPem` is given), `<name>.crt` and `<name>.key` (mode 0600) in `dir`.
 * The name `ca` stores the CA itself: `ca.crt` and `ca.key`.
 */
export async function writeCertBundle(
  dir: string,
  name: string,
  pair: CertKeyPair,
  caCertPem?: string,
): Promise<void> {
  checkFileName(name);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (caCertPem !== undefined && name !== 'ca') await writeSecureFile(join(dir, 'ca.crt'), caCertPem, 0o644);
  await writeSecureFile(join(dir, `${name}.crt`), pair.certPem, 0o644);
  await writeSecureFile(join(dir, `${name}.key`), pair.keyPem, 0o600);
  await fsyncDir(dir);
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TerminalError('not-found', `${what} not found at ${path} (run "drsite certs" to create it)`, { cause: e });
    }
    throw e;
  }
}

/** Reads `ca.crt`, `<name>.crt` and `<name>.key` from `dir`. */
export async function loadCertBundle(dir: string, name: string): Promise<CertBundle> {
  checkFileName(name);
  const [ca, cert, key] = await Promise.all([
    readPem(join(dir, 'ca.crt'), 'CA certificate'),
    readPem(join(dir, `${name}.crt`), `certificate of "${name}"`),
    readPem(join(dir, `${name}.key`), `private key of "${name}"`),
  ]);
  return { ca, cert, key };
}

async function loadPairIfExists(dir: string, name: string): Promise<CertKeyPair | undefined> {
  try {
    const [certPem, keyPem] = await Promise.all([
      readFile(join(dir, `${name}.crt`), 'utf8'),
      readFile(join(dir, `${name}.key`), 'utf8'),
    ]);
    return { certPem, keyPem };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

// A host certificate is kept only if the current CA signed it, it names the host and it has at
// least 30 days left; anything else is reissued.
function stillValid(ca: CertKeyPair, pair: CertKeyPair, host: string): boolean {
  try {
    const caX = new X509Certificate(ca.certPem);
    const x = new X509Certificate(pair.certPem);
    return (
      x.verify(caX.publicKey) &&
      x.checkIssued(caX) &&
      (isIP(host) ? x.checkIP(host) : x.checkHost(host)) !== undefined &&
      new Date(x.validTo).getTime() - Date.now() > 30 * DAY_MS
    );
  } catch {
    return false;
  }
}

export interface InitCertificatesResult {
  readonly caCreated: boolean;
  /** Hosts whose certificate was (re)issued by this call. */
  readonly issued: readonly string[];
  /** Hosts whose existing certificate was valid and kept. */
  readonly kept: readonly string[];
}

/**
 * What `drsite certs` does: creates the CA in `dir` when missing, then one certificate per host
 * (CN = host; SAN = host, localhost, 127.0.0.1, ::1; usable as server and client). Idempotent: an
 * existing CA is never replaced, and a host certificate it signed is kept.
 */
export async function initCertificates(dir: string, hosts: readonly string[]): Promise<InitCertificatesResult> {
  for (const h of hosts) checkFileName(h);
  let ca = await loadPairIfExists(dir, 'ca');
  const caCreated = ca === undefined;
  if (ca === undefined) {
    ca = createCa({ commonName: 'drsite CA' });
    await writeCertBundle(dir, 'ca', ca);
  }
  const issued: string[] = [];
  const kept: string[] = [];
  for (const host of new Set(hosts)) {
    const existing = await loadPairIfExists(dir, host);
    if (existing !== undefined && stillValid(ca, existing, host)) {
      kept.push(host);
      continue;
    }
    const altNames = [...new Set([host, 'localhost', '127.0.0.1', '::1'])];
    await writeCertBundle(dir, host, issueCertificate(ca, { commonName: host, altNames, usage: 'both' }), ca.certPem);
    issued.push(host);
  }
  return { caCreated, issued, kept };
}

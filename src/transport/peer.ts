// Who is on the other end of a mutual-TLS connection, and what the replica server decided about
// them. Shared by the server (mtls.ts) and the allowedPrimaries rules (authorization.ts).
import type { PeerCertificate } from 'node:tls';

export interface PeerIdentity {
  /** Subject CN of the client certificate ('' when it has none). */
  readonly commonName: string;
  /** DNS names from subjectAltName (IP entries are in `ipAddresses`). */
  readonly altNames: readonly string[];
  readonly ipAddresses: readonly string[];
  /** SHA-256 fingerprint, colon-separated upper-case hex, as Node prints it. */
  readonly fingerprint256: string;
}

/** The outcome of Hyper-V's "allowed primary servers" check for one peer. */
export type AuthDecision =
  | { readonly allowed: true; readonly storagePath: string; readonly trustGroup: string }
  | { readonly allowed: false; readonly reason: string };

// Node renders subjectAltName as `DNS:a, IP Address:1.2.3.4`, quoting entries with unusual
// characters as JSON strings: split on the separators outside quotes.
function splitAltNames(s: string): string[] {
  const out: string[] = [];
  for (const m of s.matchAll(/([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:,\s*|$)/g)) {
    let v = m[2];
    if (v.startsWith('"')) {
      try {
        v = JSON.parse(v) as string;
      } catch {
        continue;
      }
    }
    out.push(`${m[1]}:${v}`);
  }
  return out;
}

/** The identity in a peer certificate as returned by `TLSSocket.getPeerCertificate()`. */
export function peerIdentityOf(cert: PeerCertificate | Record<string, never>): PeerIdentity {
  const c = cert as Partial<PeerCertificate>;
  const cn = c.subject?.CN;
  const entries = splitAltNames(c.subjectaltname ?? '');
  return {
    commonName: Array.isArray(cn) ? (cn[0] ?? '') : (cn ?? ''),
    altNames: entries.filter((e) => e.startsWith('DNS:')).map((e) => e.slice(4)),
    ipAddresses: entries.filter((e) => e.startsWith('IP Address:')).map((e) => e.slice(11)),
    fingerprint256: c.fingerprint256 ?? '',
  };
}

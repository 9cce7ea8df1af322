// Hyper-V Replica's "allow replication from the specified servers": authorization entries that
// match the primary's certificate name against a pattern and say where its replicas are stored
// and which trust group it belongs to. Every refusal is logged for the operator.
import { TerminalError } from '../model/errors.ts';
import { stderrLogger, type Logger } from './logger.ts';
import type { AuthDecision, PeerIdentity } from './peer.ts';

export interface AllowedPrimary {
  /** Pattern on the client certificate's CN or DNS names: `*` matches any run of characters
   * (dots included, as in Hyper-V's `*.contoso.com`); case-insensitive. */
  readonly server: string;
  readonly storagePath: string;
  readonly trustGroup: string;
}

const normalize = (name: string): string => name.toLowerCase().replace(/\.$/, '');

/** Does `name` match the Hyper-V style pattern? */
export function matchesServerPattern(pattern: string, name: string): boolean {
  const p = normalize(pattern);
  const n = normalize(name);
  if (!p.includes('*')) return p === n;
  const re = new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's');
  return re.test(n);
}

// Specificity of a matching pattern: an exact name beats any wildcard; among wildcards, more
// literal characters is more specific (`*.eu.contoso.com` before `*.contoso.com` before `*`).
function specificity(pattern: string): number {
  return pattern.includes('*') ? pattern.replaceAll('*', '').length : Number.MAX_SAFE_INTEGER;
}

/**
 * The pure decision: the most specific entry matching the peer's CN or any DNS subjectAltName
 * wins; among equally specific entries the first declared wins.
 */
export function authorizePeer(entries: readonly AllowedPrimary[], peer: PeerIdentity): AuthDecision {
  const names = [...new Set([peer.commonName, ...peer.altNames].filter((n) => n.length > 0))];
  if (names.length === 0) return { allowed: false, reason: 'the client certificate names no server (no CN, no DNS names)' };
  if (entries.length === 0) return { allowed: false, reason: 'no allowed primary servers are configured' };
  let best: AllowedPrimary | undefined;
  let bestScore = -1;
  for (const e of entries) {
    if (!names.some((n) => matchesServerPattern(e.server, n))) continue;
    const score = specificity(e.server);
    if (score > bestScore) {
      best = e;
      bestScore = score;
    }
  }
  if (best === undefined) {
    return {
      allowed: false,
      reason: `no allowedPrimaries entry matches ${names.map((n) => `"${n}"`).join(', ')} (patterns: ${entries.map((e) => `"${e.server}"`).join(', ')})`,
    };
  }
  return { allowed: true, storagePath: best.storagePath, trustGroup: best.trustGroup };
}

/**
 * An `authorize` callback for `createMtlsServer` that applies `entries` and logs each refusal
 * with the peer's name, certificate fingerprint and the reason.
 */
export function createAuthorizer(
  entries: readonly AllowedPrimary[],
  logger: Logger = stderrLogger,
): (peer: PeerIdentity) => AuthDecision {
  for (const [i, e] of entries.entries()) {
    if (e.server.trim().length === 0) {
      throw new TerminalError('invalid-argument', `allowedPrimaries[${i}].server is empty`);
    }
  }
  const frozen = entries.map((e) => ({ ...e }));
  return (peer) => {
    const d = authorizePeer(frozen, peer);
    if (!d.allowed) {
      logger.warn('replication refused: peer is not an allowed primary server', {
        peer: peer.commonName,
        altNames: peer.altNames,
        fingerprint256: peer.fingerprint256,
        reason: d.reason,
      });
    }
    return d;
  };
}

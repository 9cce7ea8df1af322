import { describe, expect, it } from 'vitest';
import {
  authorizePeer,
  createAuthorizer,
  matchesServerPattern,
  type AllowedPrimary,
} from '../../src/transport/authorization.ts';
import type { PeerIdentity } from '../../src/transport/peer.ts';
import { recordingLogger } from './helpers.ts';

const peer = (commonName: string, altNames: string[] = []): PeerIdentity => ({
  commonName,
  altNames,
  ipAddresses: [],
  fingerprint256: 'AA:BB',
});

describe('matchesServerPattern (Hyper-V allowed primary server patterns)', () => {
  const cases: { reason: string; pattern: string; name: string; match: boolean }[] = [
    { reason: 'exact name', pattern: 'hv1.contoso.com', name: 'hv1.contoso.com', match: true },
    { reason: 'exact name differs', pattern: 'hv1.contoso.com', name: 'hv2.contoso.com', match: false },
    { reason: 'case-insensitive', pattern: 'HV1.Contoso.COM', name: 'hv1.contoso.com', match: true },
    { reason: 'trailing dot ignored', pattern: 'hv1.contoso.com.', name: 'hv1.contoso.com', match: true },
    { reason: 'wildcard label', pattern: '*.contoso.com', name: 'hv1.contoso.com', match: true },
    { reason: '* spans dots, as in Hyper-V', pattern: '*.contoso.com', name: 'hv1.eu.contoso.com', match: true },
    { reason: 'wildcard needs the dot', pattern: '*.contoso.com', name: 'contoso.com', match: false },
    { reason: 'suffix lookalike', pattern: '*.contoso.com', name: 'hv1.contoso.com.evil.net', match: false },
    { reason: 'no regex meaning for dots', pattern: '*.contoso.com', name: 'hv1.contosoXcom', match: false },
    { reason: 'wildcard inside a label', pattern: 'hv*.contoso.com', name: 'hv42.contoso.com', match: true },
    { reason: 'wildcard case-insensitive', pattern: '*.CONTOSO.com', name: 'Hv1.contoso.COM', match: true },
    { reason: 'lone star matches all', pattern: '*', name: 'anything.example', match: true },
    { reason: 'other domain', pattern: '*.contoso.com', name: 'hv1.fabrikam.com', match: false },
  ];
  it.each(cases)('$reason: $pattern vs $name', ({ pattern, name, match }) => {
    expect(matchesServerPattern(pattern, name)).toBe(match);
  });
});

describe('authorizePeer', () => {
  const entries: AllowedPrimary[] = [
    { server: '*', storagePath: '/r/any', trustGroup: 'all' },
    { server: '*.contoso.com', storagePath: '/r/contoso', trustGroup: 'contoso' },
    { server: '*.eu.contoso.com', storagePath: '/r/eu', trustGroup: 'eu' },
    { server: 'hv1.eu.contoso.com', storagePath: '/r/hv1', trustGroup: 'hv1' },
    { server: '*.contoso.com', storagePath: '/r/second', trustGroup: 'second' },
  ];
  const cases: { reason: string; entries: AllowedPrimary[]; peer: PeerIdentity; trustGroup?: string; refused?: RegExp }[] = [
    { reason: 'exact beats every wildcard', entries, peer: peer('hv1.eu.contoso.com'), trustGroup: 'hv1' },
    { reason: 'longer wildcard beats shorter', entries, peer: peer('hv2.eu.contoso.com'), trustGroup: 'eu' },
    { reason: 'equal specificity: first declared wins', entries, peer: peer('hv3.contoso.com'), trustGroup: 'contoso' },
    { reason: 'catch-all last', entries, peer: peer('hv.fabrikam.com'), trustGroup: 'all' },
    {
      reason: 'DNS SAN counts like the CN',
      entries: entries.slice(1),
      peer: peer('primary', ['hv9.contoso.com']),
      trustGroup: 'contoso',
    },
    { reason: 'no entry matches', entries: entries.slice(1), peer: peer('hv.fabrikam.com'), refused: /no allowedPrimaries entry matches "hv.fabrikam.com"/ },
    { reason: 'nothing configured', entries: [], peer: peer('hv1.contoso.com'), refused: /no allowed primary servers/ },
    { reason: 'certificate without names', entries, peer: peer(''), refused: /names no server/ },
  ];
  it.each(cases)('$reason', ({ entries: es, peer: p, trustGroup, refused }) => {
    const d = authorizePeer(es, p);
    if (refused) {
      expect(d).toMatchObject({ allowed: false });
      expect(d.allowed === false && d.reason).toMatch(refused);
    } else {
      expect(d).toEqual({ allowed: true, trustGroup, storagePath: es.find((e) => e.trustGroup === trustGroup)!.storagePath });
    }
  });

  it('createAuthorizer logs every refusal with peer name, fingerprint and reason, and nothing on success', () => {
    const log = recordingLogger();
    const authorize = createAuthorizer([{ server: '*.contoso.com', storagePath: '/r', trustGroup: 'g' }], log);
    expect(authorize(peer('hv1.contoso.com')).allowed).toBe(true);
    expect(log.entries).toEqual([]);
    expect(authorize(peer('hv1.fabrikam.com')).allowed).toBe(false);
    expect(log.entries).toHaveLength(1);
    expect(log.entries[0]).toMatchObject({
      level: 'warn',
      fields: { peer: 'hv1.fabrikam.com', fingerprint256: 'AA:BB', reason: expect.stringMatching(/no allowedPrimaries entry/) },
    });
    expect(() => createAuthorizer([{ server: ' ', storagePath: '/r', trustGroup: 'g' }], log)).toThrow(/allowedPrimaries\[0\]\.server is empty/);
  });
});

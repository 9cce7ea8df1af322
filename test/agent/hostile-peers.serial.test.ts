// The agent API against hostile peers (issue 13, part 4): real agents over mutual TLS on
// loopback. A primary of another trust group cannot touch host-a's replica; names and ids with
// traversal, NUL, 4 KiB and Unicode look-alikes are refused with 4xx and change no file (the whole
// data tree is hashed before and after); malformed and 100 MB bodies, a slowloris and 1,000
// connections are refused or served cleanly while a legitimate client keeps being served.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RouteSpec } from '../../src/transport/agent-api.ts';
import { loadCertBundle } from '../../src/transport/certs.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, OPERATOR, policy30s } from './cluster.ts';
import { ROUTES, pathOf, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
const REL = 'rel-vm1';

let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;
/** A directory beside the cluster that traversal attempts aim at; it must stay empty. */
let canary: string;

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }, { name: 'host-c' }]);
  // host-b accepts host-a and host-c as primaries, in different trust groups.
  const config = cluster.host('host-b').config;
  writeFileSync(
    config,
    readFileSync(config, 'utf8')
      .split('\n')
      .map((l) => (l.includes('server: "host-a"') ? l.replace('trustGroup: test', 'trustGroup: group-a') : l))
      .map((l) => (l.includes('server: "host-c"') ? l.replace('trustGroup: test', 'trustGroup: group-c') : l))
      .join('\n'),
  );
  await cluster.startInProcess('host-a');
  await cluster.startInProcess('host-b');
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
  await send(a, ROUTES.createVm, {}, { name: 'vm1', disks: [{ name: 'os', size: 1 * MiB }, { name: 'data', size: 1 * MiB }] });
  await send(a, ROUTES.createRelationship, {}, { id: REL, vm: 'vm1', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
  await send(a, ROUTES.startReplication, { id: REL }, undefined, { query: { wait: 'true' } });
  await send(a, ROUTES.replicateNow, { id: REL });
  canary = mkdtempSync(join(tmpdir(), 'drsite-canary-'));
});

afterAll(async () => {
  await cluster?.destroy();
  if (canary) rmSync(canary, { recursive: true, force: true });
});

interface RawResponse {
  status: number;
  body: string;
}

/** One request with the exact path given (no URL normalisation), presenting certificate `as`. */
async function raw(host: string, as: string, method: string, path: string, body?: Buffer | string, headers: Record<string, string | number> = {}): Promise<RawResponse> {
  const t = await loadCertBundle(cluster.certs, as);
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: cluster.host(host).port, method, path, ca: t.ca, cert: t.cert, key: t.key, agent: false, headers: { ...(body !== undefined && { 'content-length': Buffer.byteLength(body) }), ...headers } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Every entry under `root`: relative path → sha256 of a file, the target of a link, or its kind. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const rel of readdirSync(root, { recursive: true, encoding: 'utf8' }).sort()) {
    const p = join(root, rel);
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) out.set(rel, `link -> ${readlinkSync(p)}`);
    else if (st.isFile()) out.set(rel, createHash('sha256').update(readFileSync(p)).digest('hex'));
    else out.set(rel, st.isDirectory() ? 'dir' : 'other');
  }
  return out;
}

function changes(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of after) if (before.get(k) !== v) out.push(before.has(k) ? `changed ${k}` : `appeared ${k}`);
  for (const k of before.keys()) if (!after.has(k)) out.push(`vanished ${k}`);
  return out;
}

async function replicaView(): Promise<unknown> {
  const v = (await send(b, ROUTES.getRelationship, { id: REL })).json<Record<string, unknown>>();
  return { state: v.state, appliedSequence: v.appliedSequence, role: v.role };
}

describe('trust groups', () => {
  test("host-c, an allowed primary of another trust group, cannot list, read, modify, fail over, remove or write logs into host-a's replica", async () => {
    const before = snapshot(cluster.root);
    const view = await replicaView();
    const id = REL;
    const attempts: [string, string, (Buffer | string)?, Record<string, string>?][] = [
      ['GET', pathOf(ROUTES.listRelationships, {})],
      ['GET', pathOf(ROUTES.getRelationship, { id })],
      ['GET', pathOf(ROUTES.recoveryPoints, { id })],
      ['POST', pathOf(ROUTES.failover, { id }), '{}'],
      ['POST', pathOf(ROUTES.testFailover, { id }), '{}'],
      ['DELETE', pathOf(ROUTES.removeRelationship, { id })],
      ['GET', pathOf(ROUTES.replicaStatus, { id })],
      ['PUT', pathOf(ROUTES.replicaSettings, { id }), JSON.stringify({ retention: { additional: 0 } })],
      ['POST', pathOf(ROUTES.replicaApply, { id })],
      ['POST', pathOf(ROUTES.replicaDiscardPending, { id })],
      ['GET', pathOf(ROUTES.replicaChecksums, { id, disk: 'os' })],
      ['POST', pathOf(ROUTES.replicaCompare, { id, disk: 'os' }), JSON.stringify({ blockSize: 65536 })],
      ['DELETE', pathOf(ROUTES.removeReplica, { id })],
      ['HEAD', pathOf(ROUTES.uploadOffset, { id, seq: 99, disk: 'os' })],
      ['PUT', pathOf(ROUTES.uploadLog, { id, seq: 99, disk: 'os' }), 'evil', { 'upload-offset': '0', 'upload-length': '4', 'upload-checksum': `sha256=${createHash('sha256').update('evil').digest('base64')}` }],
    ];
    for (const [method, path, body, headers] of attempts) {
      const r = await raw('host-b', 'host-c', method, path, body, headers);
      expect(r.status, `${method} ${path}: ${r.body}`).toBe(403);
      // Operator routes refuse the caller itself; primary routes refuse it for this relationship.
      const says = path.includes('/replica/') ? `relationship ${id} belongs to primary host-a, not host-c` : 'host-c may not manage host-b';
      if (method !== 'HEAD') expect(r.body, `${method} ${path}`).toContain(says);
    }
    // Creating a replica under host-a's id is refused too, and names no secret of it.
    const keys = { encryptionKey: randomBytes(32).toString('base64'), macKey: randomBytes(32).toString('base64') };
    const take = await raw('host-b', 'host-c', 'POST', pathOf(ROUTES.createReplica, {}), JSON.stringify({ id, vm: 'vm1', disks: [{ id: 'os', size: MiB }], keys, retention: { additional: 1 } }));
    expect(take.status, take.body).toBe(403);
    expect(take.body).toContain(`relationship ${id} belongs to another primary`);
    expect(await replicaView()).toEqual(view);
    expect(changes(before, snapshot(cluster.root))).toEqual([]);

    // host-c's own replica lands in its own trust group's storage.
    const own = await raw('host-b', 'host-c', 'POST', pathOf(ROUTES.createReplica, {}), JSON.stringify({ id: 'rel-c', vm: 'vm-c', disks: [{ id: 'os', size: MiB }], keys, retention: { additional: 1 } }));
    expect(own.status, own.body).toBe(201);
    const rc = (await send(b, ROUTES.getRelationship, { id: 'rel-c' })).json<{ storagePath?: string; trustGroup?: string }>();
    expect(JSON.stringify(rc)).toContain(join(cluster.host('host-b').dataDir, 'from-host-c', 'rel-c'));
    // And host-a cannot touch host-c's.
    const r = await raw('host-b', 'host-a', 'GET', pathOf(ROUTES.replicaStatus, { id: 'rel-c' }));
    expect(r.status).toBe(403);
    expect(r.body).toContain('relationship rel-c belongs to primary host-c, not host-a');
    expect(await replicaView()).toEqual(view);
  });
});

const enc = encodeURIComponent;

/** Names and ids as they appear in a request path (already percent-encoded where a client must). */
function badNames(): string[] {
  const up = '..%2F'.repeat(12);
  return [
    '..',
    '..%2f',
    '%2e%2e',
    '%2E%2E%2F%2E%2E%2Fetc',
    `${up}${enc(canary.slice(1))}%2Fx`,
    `..%5C..%5C${enc(canary.slice(1))}`,
    `${enc(canary)}%2Fx`,
    '%2Fetc%2Fpasswd',
    `..%252F..%252F${enc(canary.slice(1))}`,
    'vm1%00',
    '%00',
    `${REL}%00..%2F..%2Fx`,
    'A'.repeat(4096),
    enc('\u2024\u2024'),
    enc('\u2024\u2024\uFF0F\u2024\u2024\uFF0Fetc'),
    enc('\uFF0E\uFF0E\uFF0Fx'),
    enc(`vm1\u2215..\u2215x`),
    '%C0%AE%C0%AE%2F',
    '%E0%A4%A',
    '%',
  ];
}

const BAD_SEQUENCES = ['0', '-1', '1.5', '1e3', '0x10', '99999999999999999999', '%201'];

/** A body each route takes, so its handler (not the body check) meets the bad name. */
function bodyFor(name: string): string | undefined {
  const bodies: Record<string, unknown> = {
    setVmPower: { power: 'Off' },
    modifySettings: { policy: policy30s },
    importMedia: { folder: canary },
    testFailover: {},
    failover: {},
    failbackFromAzure: {},
    moveStorage: { path: canary },
    extend: { id: 'rel-new', replica: { name: 'host-c', endpoint: '' }, policy: policy30s },
    reverse: { id: 'rel-new', replica: { name: 'host-c', endpoint: '' }, policy: policy30s },
    replicaCompare: { blockSize: 65536 },
    replicaSettings: { retention: { additional: 1 } },
  };
  return name in bodies ? JSON.stringify(bodies[name]) : undefined;
}

describe('names and ids', () => {
  test('traversal, absolute paths, NUL, 4 KiB names and Unicode look-alikes in every name and id of every route: 4xx, never 5xx, and no file changes anywhere', async () => {
    const before = snapshot(cluster.root);
    const good: Record<string, string> = { id: REL, name: 'vm1', seq: '1', disk: 'os', group: 'g' };
    const seen: string[] = [];
    let requests = 0;
    for (const [name, spec] of Object.entries(ROUTES) as [string, RouteSpec][]) {
      const params = spec.path.split('/').filter((p) => p.startsWith(':')).map((p) => p.slice(1));
      for (const param of params) {
        for (const bad of param === 'seq' ? [...BAD_SEQUENCES, ...badNames()] : badNames()) {
          const path = spec.path.replace(/:(\w+)/g, (_, p: string) => (p === param ? bad : good[p]));
          const body = spec.raw && spec.method === 'PUT' ? 'evil' : bodyFor(name);
          const headers: Record<string, string> = spec.raw ? { 'upload-offset': '0', 'upload-length': '4', 'upload-checksum': `sha256=${createHash('sha256').update('evil').digest('base64')}` } : {};
          // Operator routes on both sides of the relationship; primary routes as its primary.
          const targets: [string, string][] = spec.caller === 'primary' ? [['host-b', 'host-a']] : [['host-a', OPERATOR], ['host-b', OPERATOR]];
          for (const [host, as] of targets) {
            const r = await raw(host, as, spec.method, path, body, headers);
            requests++;
            if (![400, 403, 404, 405].includes(r.status)) seen.push(`${host} ${spec.method} ${path.slice(0, 120)} (${param}) -> ${r.status} ${r.body.slice(0, 200)}`);
          }
        }
      }
    }
    expect(requests).toBeGreaterThan(1000);
    expect(seen).toEqual([]);
    expect(changes(before, snapshot(cluster.root))).toEqual([]);
    expect(readdirSync(canary)).toEqual([]);
  });

  test("a primary's body cannot name a replica's disks, VM or seed outside its storage: 400 naming the field, nothing created", async () => {
    const before = snapshot(cluster.root);
    const keys = { encryptionKey: randomBytes(32).toString('base64'), macKey: randomBytes(32).toString('base64') };
    const base = { id: 'rel-evil', vm: 'vm-evil', disks: [{ id: 'os', size: MiB }], keys, retention: { additional: 1 } };
    const disk = (id: string) => ['body field disks.0.id must match pattern', { disks: [{ id, size: MiB }] }] as const;
    const cases: (readonly [string, object])[] = [
      disk(`../../../../../../../../../../..${canary}/x`),
      disk(`${canary}/x`),
      disk('os\u0000'),
      disk('\u2024\u2024\uFF0Fx'),
      disk('A'.repeat(4096)),
      ['body field vm must match pattern', { vm: '../../../x' }],
      ['body field vm must match pattern', { vm: 'vm\u0000' }],
      ['body field vm must match pattern', { vm: '\uFF0E\uFF0E\uFF0Fx' }],
      ['body field vm must match pattern', { vm: 'A'.repeat(4096) }],
      ['body field seedFromVm must match pattern', { seedFromVm: '../vm1' }],
      ['relationship id "../rel" is not valid', { id: '../rel' }],
    ];
    for (const [says, over] of cases) {
      const r = await raw('host-b', 'host-a', 'POST', pathOf(ROUTES.createReplica, {}), JSON.stringify({ ...base, ...over }));
      expect(r.status, `${says}: ${r.body}`).toBe(400);
      expect((JSON.parse(r.body) as { error: { message: string } }).error.message).toContain(says);
    }
    expect(changes(before, snapshot(cluster.root))).toEqual([]);
    expect(readdirSync(canary)).toEqual([]);
  });

  test("a primary cannot place its replica outside its entry's storage path, nor seed from a VM the host does not replicate to it: 403, nothing created or moved", async () => {
    await send(b, ROUTES.createVm, {}, { name: 'vm-b', disks: [{ name: 'os', size: MiB }], power: 'Off' });
    const before = snapshot(cluster.root);
    const keys = { encryptionKey: randomBytes(32).toString('base64'), macKey: randomBytes(32).toString('base64') };
    const base = { vm: 'vm-x', disks: [{ id: 'os', size: MiB }], keys, retention: { additional: 1 } };
    const cases: (readonly [string, string, object])[] = [
      ['host-c', 'outside its storage path', { id: 'rel-out1', storagePath: canary }],
      ['host-c', 'outside its storage path', { id: 'rel-out2', storagePath: '../from-host-a' }],
      ['host-a', 'outside its storage path', { id: 'rel-out3', storagePath: join(cluster.host('host-b').dataDir, 'replica-records') }],
      ['host-c', 'may not seed from VM vm-b on host-b: it is not replicated to host-c', { id: 'rel-seed1', vm: 'vm-b', seedFromVm: 'vm-b' }],
      ['host-a', 'may not seed from VM vm-b on host-b: it is not replicated to host-a', { id: 'rel-seed2', vm: 'vm-b', seedFromVm: 'vm-b', discardSeed: true }],
    ];
    for (const [as, says, over] of cases) {
      const r = await raw('host-b', as, 'POST', pathOf(ROUTES.createReplica, {}), JSON.stringify({ ...base, ...over }));
      expect(r.status, `${says}: ${r.body}`).toBe(403);
      expect((JSON.parse(r.body) as { error: { message: string } }).error.message).toContain(says);
    }
    expect(changes(before, snapshot(cluster.root))).toEqual([]);
    expect(readdirSync(canary)).toEqual([]);
    expect((await send(b, ROUTES.getVm, { name: 'vm-b' })).json<{ name: string }>().name).toBe('vm-b');
  });
});

/** The legitimate operator client is served (the agent's health, and host-a's relationship). */
async function legitServed(): Promise<void> {
  expect((await send(a, ROUTES.health, {})).json()).toMatchObject({ name: 'host-a' });
  expect((await send(a, ROUTES.getRelationship, { id: REL })).json()).toMatchObject({ id: REL, state: 'Replicating' });
}

/** Opens a TLS connection to host-a with the operator's certificate. */
async function tlsSocket(): Promise<tls.TLSSocket> {
  const t = await loadCertBundle(cluster.certs, OPERATOR);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: cluster.host('host-a').port, ca: t.ca, cert: t.cert, key: t.key });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

describe('hostile bodies and connections', () => {
  test('malformed JSON is a 400 saying so, on operator and primary routes, and changes nothing', async () => {
    const before = snapshot(cluster.root);
    for (const body of ['{"name": ', 'null x', '\u0000\u0001', '{"name":"v","disks":[{"name":"os","size":1}]}}']) {
      const r = await raw('host-a', OPERATOR, 'POST', pathOf(ROUTES.createVm, {}), body, { 'content-type': 'application/json' });
      expect(r.status, r.body).toBe(400);
      expect(r.body).toContain('request body is not valid JSON');
      const p = await raw('host-b', 'host-a', 'POST', pathOf(ROUTES.createReplica, {}), body);
      expect(p.status, p.body).toBe(400);
      expect(p.body).toContain('request body is not valid JSON');
    }
    expect(changes(before, snapshot(cluster.root))).toEqual([]);
    await legitServed();
  });

  test('a 100 MB body is refused with 413 before it is sent (declared) or without being buffered (chunked)', async () => {
    const t = await loadCertBundle(cluster.certs, OPERATOR);
    // Declared: the 413 arrives while the client has sent only 1 MiB of the 100 MB.
    for (const [path, host] of [[pathOf(ROUTES.createVm, {}), 'host-a'], [pathOf(ROUTES.health, {}), 'host-a'], [pathOf(ROUTES.modifySettings, { id: REL }), 'host-a']] as const) {
      const status = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = https.request(
          { host: '127.0.0.1', port: cluster.host(host).port, method: path === pathOf(ROUTES.health, {}) ? 'GET' : path.endsWith('settings') ? 'PUT' : 'POST', path, ca: t.ca, cert: t.cert, key: t.key, agent: false, headers: { 'content-length': 100_000_000, 'content-type': 'application/json' } },
          (res) => {
            const parts: Buffer[] = [];
            res.on('data', (c: Buffer) => parts.push(c));
            res.on('end', () => {
              req.destroy();
              resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() });
            });
          },
        );
        req.on('error', reject);
        req.write(Buffer.alloc(1 * MiB, 0x20));
      });
      expect(status.status, `${path}: ${status.body}`).toBe(413);
      expect(status.body).toContain('request body of 100000000 bytes exceeds the 1048576-byte limit');
    }
    // Chunked (no length to refuse up front): counted as it streams, never kept.
    const rss = process.memoryUsage().rss;
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port: cluster.host('host-a').port, method: 'POST', path: pathOf(ROUTES.createVm, {}), ca: t.ca, cert: t.cert, key: t.key, agent: false, headers: { 'transfer-encoding': 'chunked' } },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }));
        },
      );
      req.on('error', reject);
      const chunk = Buffer.alloc(1 * MiB, 0x20);
      let sent = 0;
      const pump = (): void => {
        while (sent < 100) {
          sent++;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    expect(chunked.status, chunked.body).toBe(413);
    expect(chunked.body).toContain('request body exceeds the 1048576-byte limit');
    // The agent runs in this process: had it kept the body, 100 MB more would be resident.
    expect(process.memoryUsage().rss - rss).toBeLessThan(80 * MiB);
    await legitServed();
  });

  test('a slowloris (one header byte a second) is dropped within the 10 s headers timeout while others are served', async () => {
    const s = await tlsSocket();
    let answer = '';
    s.on('data', (c: Buffer) => (answer += c));
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.on('error', () => {});
    const request = `GET ${pathOf(ROUTES.health, {})} HTTP/1.1\r\nHost: host-a\r\nX-Slow: ` + 'a'.repeat(100);
    let i = 0;
    const drip = setInterval(() => {
      if (!s.destroyed && i < request.length) s.write(request[i++]);
    }, 1000);
    try {
      let dropped = false;
      const bounded = new Promise<void>((resolve) => setTimeout(resolve, 25_000));
      void closed.then(() => (dropped = true));
      // Meanwhile a legitimate client is served, again and again.
      while (!dropped) {
        await legitServed();
        await Promise.race([closed, bounded, new Promise((r) => setTimeout(r, 2000))]);
        if (!dropped && i > 22) break;
      }
      expect(dropped, `still open after ${i} bytes`).toBe(true);
      expect(i).toBeLessThan(request.length);
      expect(answer === '' || answer.startsWith('HTTP/1.1 408')).toBe(true);
    } finally {
      clearInterval(drip);
      s.destroy();
    }
    await legitServed();
  }, 40_000);

  test('1,000 concurrent TLS connections each asking for /v1/health: every one is served 200 or refused cleanly, and the agent keeps serving', async () => {
    const t = await loadCertBundle(cluster.certs, OPERATOR);
    const one = () =>
      new Promise<string>((resolve) => {
        const req = https.request(
          { host: '127.0.0.1', port: cluster.host('host-a').port, path: pathOf(ROUTES.health, {}), ca: t.ca, cert: t.cert, key: t.key, agent: false },
          (res) => {
            res.resume();
            res.on('end', () => resolve(String(res.statusCode)));
          },
        );
        req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        req.end();
      });
    const all = Array.from({ length: 1000 }, one);
    // A legitimate client in the middle of the storm.
    await legitServed();
    const outcomes = await Promise.all(all);
    const counts: Record<string, number> = {};
    for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
    // Clean outcomes only: served, or the connection refused/reset before a request was taken.
    for (const o of Object.keys(counts)) expect(['200', '503', 'ECONNRESET', 'ECONNREFUSED'], JSON.stringify(counts)).toContain(o);
    expect(counts['200'] ?? 0, JSON.stringify(counts)).toBeGreaterThan(0);
    await legitServed();
  }, 50_000);
});

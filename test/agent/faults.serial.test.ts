// Faults at the edges between real agent processes: the replica killed during apply, the primary
// killed without a clean cut, damaged logs, and peers that must be refused.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import { readLogHeader, writeLog } from '../../src/core/log/log-format.ts';
import { RetryableError, TerminalError } from '../../src/model/errors.ts';
import type { RecoveryPointInfo, RelationshipView, ReplicaStatus } from '../../src/transport/agent-api.ts';
import { createCa, issueCertificate } from '../../src/transport/certs.ts';
import { createMtlsClient, type MtlsClient } from '../../src/transport/mtls.ts';
import { uploadFile } from '../../src/transport/upload-client.ts';
import { Cluster, policy30s, sha256File } from './cluster.ts';
import { killPlan } from '../support/kills.ts';
import { ROUTES, pathOf, send } from '../support/agent-client.ts';

// Seeded kill moments: DRSITE_SEED replays them, DRSITE_KILLS sets how many (8 in npm test).
const kills = killPlan(import.meta.filename);

const MiB = 1 << 20;
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b', allowedPrimaries: ['host-a', 'stranger-*'] }], ['intruder', 'stranger-1']);
  await cluster.startProcess('host-a');
  await cluster.startProcess('host-b');
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
});
afterAll(async () => cluster?.destroy());

async function protect(vm: string, disks: { name: string; size: number }[]): Promise<string> {
  await send(a, ROUTES.createVm, {}, { name: vm, disks });
  const id = `rel-${vm}`;
  await send(a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
  await send(a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  return id;
}

async function digest(id: string, seq: number, disk: string): Promise<string> {
  return (await send(b, ROUTES.pointDigest, { id, seq, disk })).json<{ sha256: string }>().sha256;
}

describe('faults', () => {
  test(`replica agent killed with SIGKILL at ${kills.kills} random moments during apply: always exactly at an acknowledged point, none lost`, async () => {
    const id = await protect('crashy', [{ name: 'd0', size: 64 * MiB }, { name: 'd1', size: 64 * MiB }]);
    const vmDir = join(cluster.host('host-a').dataDir, 'vms', 'crashy');
    const socket = join(cluster.host('host-a').dataDir, 'nbd', 'crashy.sock');
    const d0 = await NbdClient.connect(socket, 'd0');
    const d1 = await NbdClient.connect(socket, 'd1');
    // State of the primary at each cut: no writes happen between taking it and the cycle's cut.
    const atCut = new Map<number, string[]>();
    const state = async () => [await sha256File(join(vmDir, 'd0.img')), await sha256File(join(vmDir, 'd1.img'))];
    let acknowledged = 1;
    atCut.set(1, await state());
    const store = join(cluster.host('host-b').dataDir, 'from-host-a', id);
    const hits = { applying: 0, other: 0 };
    for (let round = 0; round < kills.kills; round++) {
      // Large scattered writes make each apply long enough for the kill to land inside it.
      await Promise.all([
        ...randomWrites(96, d0.size, 10 * round + 1, { maxBlocks: 64 }).map((w) => d0.write(w.offset, w.data)),
        ...randomWrites(96, d1.size, 10 * round + 2, { maxBlocks: 64 }).map((w) => d1.write(w.offset, w.data)),
      ]);
      // No writes happen between this and the cycle's cut, so this is the state at the cut.
      const expected = await state();
      const seq = (await send(a, ROUTES.getRelationship, { id })).json<RelationshipView>().lastCutSequence! + 1;
      let settled = false;
      const cyc = send(a, ROUTES.replicateNow, { id }).then(
        (r) => r.json<{ sequence: number; applied: number }>(),
        (e: unknown) => e as Error,
      ).finally(() => (settled = true));
      // Wait until the replica's journal says this point is being applied, then kill at a random
      // moment inside (or, when the apply is quicker, just after) that window.
      const applying = () => {
        try {
          return (JSON.parse(readFileSync(join(store, 'state.json'), 'utf8')) as { applying: { sequence: number } | null }).applying?.sequence === seq;
        } catch {
          return false;
        }
      };
      while (!settled && !applying()) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, kills.delayMs(25)));
      await cluster.kill('host-b', 'SIGKILL');
      const journal = JSON.parse(readFileSync(join(store, 'state.json'), 'utf8')) as { applying: unknown };
      if (journal.applying) hits.applying++;
      else hits.other++;
      const result = await cyc;
      const cutAfter = (await send(a, ROUTES.getRelationship, { id })).json<RelationshipView>().lastCutSequence!;
      expect(cutAfter).toBe(seq);
      atCut.set(seq, expected);
      if (!(result instanceof Error)) acknowledged = result.applied;
      await cluster.startProcess('host-b');
      const status = (await send(b, ROUTES.getRelationship, { id })).json<RelationshipView>();
      // Exactly at some complete point, never between, never before an acknowledged one.
      expect(status.appliedSequence).toBeGreaterThanOrEqual(acknowledged);
      const want = atCut.get(status.appliedSequence);
      expect(want, `point ${status.appliedSequence} is one the primary cut`).toBeDefined();
      expect([await digest(id, status.appliedSequence, 'd0'), await digest(id, status.appliedSequence, 'd1')]).toEqual(want);
      acknowledged = Math.max(acknowledged, status.appliedSequence);
    }
    // Converges: one more cycle brings the replica to the primary.
    const last = (await send(a, ROUTES.replicateNow, { id })).json<{ sequence: number; applied: number }>();
    expect(last.applied).toBe(last.sequence);
    expect([await digest(id, last.sequence, 'd0'), await digest(id, last.sequence, 'd1')]).toEqual(await state());
    if (process.env.DRSITE_TEST_VERBOSE) console.log(hits);
    // The journal said "applying" at the kill: the kill interrupted the apply itself.
    expect(hits.applying, JSON.stringify(hits)).toBeGreaterThanOrEqual(Math.ceil(kills.kills / 3));
    await d0.close();
    await d1.close();
  }, 240_000);

  test('a damaged or truncated log is refused, nothing of it applied, health Warning, then the log is accepted when sent again', async () => {
    const id = await protect('tamper', [{ name: 'd0', size: 4 * MiB }]);
    const before = (await send(b, ROUTES.getRelationship, { id })).json<RelationshipView>();
    const beforeDigest = await digest(id, before.appliedSequence, 'd0');
    // Act as host-a (its certificate) and send a log it sealed with the relationship's keys.
    const keys = JSON.parse(readFileSync(join(cluster.host('host-a').dataDir, 'relationships', id, 'keys.json'), 'utf8')) as { encryptionKey: string; macKey: string };
    const relKeys = { encryptionKey: Buffer.from(keys.encryptionKey, 'base64'), macKey: Buffer.from(keys.macKey, 'base64') };
    const seq = before.appliedSequence + 1;
    const good = join(cluster.root, 'good.hrl');
    await writeLog(
      { relationshipId: id, diskId: 'd0', diskSize: 4 * MiB, sequence: seq, basePoint: seq - 1, blockSize: 4096, cutTime: Date.now(), consistency: 'crash', kind: 'delta', cutId: 'test-cut' },
      [{ offset: 8192, data: randomBytes(64 * 1024) }],
      relKeys,
      good,
    );
    const asPrimary = await cluster.client('host-b', 'host-a');
    const url = pathOf(ROUTES.uploadLog, { id, seq, disk: 'd0' });
    const flipped = join(cluster.root, 'flipped.hrl');
    const bytes = readFileSync(good);
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    writeFileSync(flipped, bytes);
    const truncated = join(cluster.root, 'truncated.hrl');
    writeFileSync(truncated, readFileSync(good));
    truncateSync(truncated, readFileSync(good).length - 100);
    for (const bad of [flipped, truncated]) {
      const err = await uploadFile(asPrimary, bad, url, { retries: 0 }).catch((e: unknown) => e);
      expect(RetryableError.is(err) && err.code === 'integrity', String(err)).toBe(true);
      const st = (await send(asPrimary, ROUTES.replicaStatus, { id })).json<ReplicaStatus>();
      expect(st.applied).toBe(before.appliedSequence);
      expect(st.received.d0 ?? []).not.toContain(seq); // not kept: the primary must send it again
    }
    expect(await digest(id, before.appliedSequence, 'd0')).toBe(beforeDigest);
    const warned = (await send(b, ROUTES.getRelationship, { id })).json<RelationshipView>();
    expect(warned.health).toBe('Warning');
    expect(warned.statistics.replicationErrors).toBe(2);
    // Sent again intact: accepted and applied.
    await uploadFile(asPrimary, good, url, { retries: 0 });
    const applied = (await send(asPrimary, ROUTES.replicaApply, { id }, {})).json<ReplicaStatus>();
    expect(applied.applied).toBe(seq);
  });

  test('peers that are not allowed are refused: another CA, a name outside allowedPrimaries, a host acting as operator', async () => {
    const url = cluster.host('host-b').url;
    const create = { id: 'rel-x', vm: 'x', disks: [{ id: 'd0', size: 4096 }], keys: { encryptionKey: randomBytes(32).toString('base64'), macKey: randomBytes(32).toString('base64') }, retention: { additional: 0 } };
    // Same name as a legitimate primary, signed by another CA.
    const rogueCa = createCa({ commonName: 'rogue CA' });
    const rogue = issueCertificate(rogueCa, { commonName: 'host-a', altNames: ['host-a', '127.0.0.1'], usage: 'client' });
    const caPem = readFileSync(join(cluster.certs, 'ca.crt'), 'utf8');
    const rogueClient = createMtlsClient({ ca: caPem, cert: rogue.certPem, key: rogue.keyPem, baseUrl: url });
    const e1 = await send(rogueClient, ROUTES.createReplica, {}, create).catch((e: unknown) => e);
    expect(TerminalError.is(e1) && e1.code === 'authentication', String(e1)).toBe(true);
    rogueClient.close();
    // From our CA, but not an allowed primary.
    const intruder = await cluster.client('host-b', 'intruder');
    const e2 = await send(intruder, ROUTES.createReplica, {}, create).catch((e: unknown) => e);
    expect(TerminalError.is(e2) && e2.code === 'authorization', String(e2)).toBe(true);
    // An allowed primary may not use the operator API.
    const hostA = await cluster.client('host-b', 'host-a');
    const e3 = await send(hostA, ROUTES.listRelationships, {}).catch((e: unknown) => e);
    expect(TerminalError.is(e3) && e3.code === 'authorization', String(e3)).toBe(true);
    // A wildcard entry admits a matching name; another primary cannot touch that replica.
    const stranger = await cluster.client('host-b', 'stranger-1');
    const created = (await send(stranger, ROUTES.createReplica, {}, create)).json<ReplicaStatus>();
    expect(created.primary).toBe('stranger-1');
    const e4 = await send(hostA, ROUTES.replicaStatus, { id: 'rel-x' }).catch((e: unknown) => e);
    expect(TerminalError.is(e4) && e4.code === 'authorization', String(e4)).toBe(true);
  });

  test('primary agent killed without a clean cut comes back ResynchronizationRequired; resync of two 256 MiB disks ships under 3%', async () => {
    const id = await protect('fragile', [{ name: 'd0', size: 256 * MiB }, { name: 'd1', size: 256 * MiB }]);
    const socket = join(cluster.host('host-a').dataDir, 'nbd', 'fragile.sock');
    const vmDir = join(cluster.host('host-a').dataDir, 'vms', 'fragile');
    // 1% of each disk changed in scattered 4 KiB blocks, then the primary dies before any cut.
    for (const disk of ['d0', 'd1']) {
      const dev = await NbdClient.connect(socket, disk);
      await Promise.all(randomWrites(Math.round((256 * MiB * 0.01) / 4096), dev.size, disk === 'd0' ? 99 : 98, { maxBlocks: 1 }).map((w) => dev.write(w.offset, w.data)));
      await dev.close().catch(() => {});
    }
    await cluster.kill('host-a', 'SIGKILL');
    await cluster.startProcess('host-a');
    const after = (await send(a, ROUTES.getRelationship, { id })).json<RelationshipView>();
    expect(after.state).toBe('ResynchronizationRequired');
    expect(after.health).toBe('Warning');
    const shippedBefore = after.bytesShipped ?? 0;
    const r = (await send(a, ROUTES.resync, { id })).json<{ action: string; sequence: number; applied: number }>();
    expect(r.action).toBe('resync');
    const done = (await send(a, ROUTES.getRelationship, { id })).json<RelationshipView>();
    expect(done.state).toBe('Replicating');
    expect(await digest(id, r.sequence, 'd0')).toBe(await sha256File(join(vmDir, 'd0.img')));
    expect(await digest(id, r.sequence, 'd1')).toBe(await sha256File(join(vmDir, 'd1.img')));
    // Bytes of sealed logs on the wire for the resync: under 3% of the 64 MiB of disks.
    expect((done.bytesShipped ?? 0) - shippedBefore).toBeLessThan(0.03 * 512 * MiB);
  });

  test('an interrupted resync resumes its transfer instead of comparing again', async () => {
    const id = await protect('resumable', [{ name: 'd0', size: 64 * MiB }]);
    const socket = join(cluster.host('host-a').dataDir, 'nbd', 'resumable.sock');
    const dev = await NbdClient.connect(socket, 'd0');
    await Promise.all(randomWrites(640, dev.size, 7, { maxBlocks: 16 }).map((w) => dev.write(w.offset, w.data)));
    await dev.close();
    const uploads = join(cluster.host('host-b').dataDir, 'replica-records', id, 'uploads');
    let settled = false;
    const first = send(a, ROUTES.resync, { id }).then(
      () => undefined,
      (e: unknown) => e,
    ).finally(() => (settled = true));
    // The compare is done and the log is on its way: the Replica server dies mid-transfer.
    while (!settled && !(await readdir(uploads).catch(() => [] as string[])).some((n) => n.endsWith('.part'))) await new Promise((r) => setTimeout(r, 2));
    await cluster.kill('host-b', 'SIGKILL');
    expect(await first).toBeInstanceOf(Error);
    expect((await send(a, ROUTES.getRelationship, { id })).json<RelationshipView>().state).toBe('Resynchronizing');
    const outbox = join(cluster.host('host-a').dataDir, 'relationships', id, 'outbox');
    const [sealedSeq] = await readdir(outbox);
    const sealed = await readLogHeader(join(outbox, sealedSeq, 'd0.hrl'));
    await cluster.startProcess('host-b');
    const r = (await send(a, ROUTES.resync, { id })).json<{ action: string; sequence: number }>();
    expect(r).toMatchObject({ action: 'resync', sequence: sealed.sequence });
    const point = (await send(b, ROUTES.recoveryPoints, { id })).json<RecoveryPointInfo[]>().at(-1)!;
    expect(point.cutId).toBe(sealed.cutId); // the same sealed log, not a new compare
    expect(await digest(id, point.sequence, 'd0')).toBe(await sha256File(join(cluster.host('host-a').dataDir, 'vms', 'resumable', 'd0.img')));
  });
});

// Network faults between a primary agent and its Replica server (issue 13, part 3): real agents,
// real mutual TLS, real sockets on loopback, with a TCP proxy the test owns in between (the
// relationship's replica endpoint is the proxy). The link is cut mid-upload, stalled past its
// no-progress timeout, reset during the TLS handshake, corrupted in the upload direction, and an
// acknowledged log is delivered twice. After each: the failure is recoverable, the transfer
// resumes from the replica's durable offset, the replica's point equals the primary's disk at the
// cut (nothing partial, nothing twice), and health is Normal again.
import { copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';


import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import { RetryableError, TerminalError } from '../../src/model/errors.ts';
import type { RecoveryPointInfo, RelationshipView, ReplicaStatus } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { uploadFile } from '../../src/transport/upload-client.ts';
import { UPLOAD_CHECKSUM, UPLOAD_LENGTH, UPLOAD_OFFSET } from '../../src/transport/upload-protocol.ts';
import { Cluster, policy30s, sha256File } from './cluster.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';
import { ROUTES, pathOf, send } from '../support/agent-client.ts';

// The replica link's no-progress timeout (the agents' `linkTimeout`): seconds, so a stall past it
// costs seconds, not a minute.
const LINK_TIMEOUT_MS = 4_000;
const linkTimeout = [`linkTimeout: ${LINK_TIMEOUT_MS}ms`];

const MiB = 1 << 20;
const DISK = 32 * MiB;

let cluster: Cluster;
let proxy: TcpProxy;
/** Operator clients of host-a and host-b, and host-b as host-a sees it (its certificate). */
let a: MtlsClient;
let b: MtlsClient;
let asPrimary: MtlsClient;

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a', config: linkTimeout }, { name: 'host-b', config: linkTimeout }]);
  await cluster.startInProcess('host-a');
  await cluster.startInProcess('host-b');
  proxy = await TcpProxy.start({ port: cluster.host('host-b').port });
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
  asPrimary = await cluster.client('host-b', 'host-a');
}, 60_000);
afterAll(async () => {
  await proxy?.close();
  await cluster?.destroy();
});

interface Cycle {
  sequence: number;
  applied: number;
}

/** A VM with one disk, protected through the proxy and initially replicated. */
async function protect(vm: string): Promise<{ id: string; disk: NbdClient; image: string }> {
  await send(a, ROUTES.createVm, {}, { name: vm, disks: [{ name: 'd0', size: DISK }] });
  const id = `rel-${vm}`;
  await send(a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: proxy.url }, policy: policy30s });
  await send(a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  const disk = await NbdClient.connect(join(cluster.host('host-a').dataDir, 'nbd', `${vm}.sock`), 'd0');
  return { id, disk, image: join(cluster.host('host-a').dataDir, 'vms', vm, 'd0.img') };
}

/** About 8 MiB of incompressible writes, so the next log is several MiB; resolves with the disk's digest. */
async function write(disk: NbdClient, image: string, seed: number): Promise<string> {
  await Promise.all(randomWrites(256, disk.size, seed, { maxBlocks: 16 }).map((w) => disk.write(w.offset, w.data)));
  // No writes happen between this and the next cut, so this is the disk at the cut.
  return sha256File(image);
}

const primaryView = async (id: string) => (await send(a, ROUTES.getRelationship, { id })).json<RelationshipView>();
const shipped = async (id: string) => (await primaryView(id)).bytesShipped ?? 0;
const replicaStatus = async (id: string) => (await send(asPrimary, ROUTES.replicaStatus, { id })).json<ReplicaStatus>();
const pointDigest = async (id: string, seq: number) =>
  (await send(b, ROUTES.pointDigest, { id, seq, disk: 'd0' })).json<{ sha256: string }>().sha256;
const replicateNow = async (id: string) => (await send(a, ROUTES.replicateNow, { id })).json<Cycle>();
const outboxLog = (id: string, seq: number) =>
  join(cluster.host('host-a').dataDir, 'relationships', id, 'outbox', String(seq).padStart(12, '0'), 'd0.hrl');

/** A cycle that must fail: resolves with its error. */
async function failingCycle(id: string): Promise<unknown> {
  return send(a, ROUTES.replicateNow, { id }).then(
    (r) => new Error(`the cycle succeeded: ${r.body.toString()}`),
    (e: unknown) => e,
  );
}

/** The failure was a recoverable one: the primary keeps Replicating, no terminal error, Warning while it retries. */
async function expectRecoverable(id: string, err: unknown): Promise<void> {
  expect(RetryableError.is(err), String(err)).toBe(true);
  expect(TerminalError.is(err)).toBe(false);
  const v = await primaryView(id);
  expect(v.state).toBe('Replicating');
  expect(v.health).toBe('Warning');
  expect(v.lastError?.code).toBe((err as RetryableError).code);
}

/**
 * Cycles with no new writes until the monitoring window's missed cycles are within Hyper-V's
 * 20 %, then health must be Normal with nothing pending.
 */
async function expectHealthyAgain(id: string): Promise<void> {
  for (let i = 0; i < 10; i++) {
    const s = (await primaryView(id)).statistics;
    if (s.missedReplicationCount <= 0.2 * (s.successfulReplicationCount + s.missedReplicationCount)) break;
    const r = await replicateNow(id);
    expect(r.applied).toBe(r.sequence);
  }
  const v = await primaryView(id);
  expect(v.healthReasons).toEqual([]);
  expect(v).toMatchObject({ state: 'Replicating', health: 'Normal', pendingBytes: 0 });
}

/**
 * Cuts the upload after `bytes`, then resets every reconnection's handshake, so the primary's
 * in-place retries fail too and the cycle fails. Resolves with the error and the sealed sequence,
 * left in the outbox with a part of it durable on the replica.
 */
async function cycleCutMidUpload(id: string, bytes: number): Promise<{ err: unknown; seq: number; durable: number }> {
  const cut = proxy.dropAfter(bytes).then((f) => {
    proxy.resetHandshakes(1_000);
    proxy.dropAll(); // pooled keep-alive connections too: the link is down
    return f;
  });
  const err = await failingCycle(id);
  await cut;
  proxy.resetHandshakes(0);
  const seq = (await primaryView(id)).lastCutSequence!;
  const head = await send(asPrimary, ROUTES.uploadOffset, { id, seq, disk: 'd0' });
  return { err, seq, durable: Number(head.headers[UPLOAD_OFFSET]) };
}

describe('network faults between a primary and its Replica server, through a TCP proxy', () => {
  test('connection cut mid-upload: retried in place from the durable offset; cut with the link down: the cycle fails, the next resumes', async () => {
    const { id, disk, image } = await protect('cut');
    const applied0 = (await replicaStatus(id)).applied;

    // 1. One cut 2 MiB into the upload: the upload's own retry resumes where the replica's fsynced bytes end.
    const atCut1 = await write(disk, image, 1);
    const shipped1 = await shipped(id);
    const fault1 = proxy.dropAfter(2 * MiB);
    const r1 = await replicateNow(id);
    const f1 = await fault1;
    const log1 = (await shipped(id)) - shipped1;
    expect(log1).toBeGreaterThan(4 * MiB);
    expect(r1.applied).toBe(r1.sequence);
    expect(r1.sequence).toBe(applied0 + 1);
    expect(await pointDigest(id, r1.sequence)).toBe(atCut1);
    // Everything sent after the cut (TLS, HTTP and the apply included) is less than the log: it resumed.
    expect(proxy.sentAfter(f1)).toBeLessThan(log1);

    // 2. A cut, then the link stays down for the in-place retries: the cycle fails, recoverably.
    const atCut2 = await write(disk, image, 2);
    const { err, seq, durable } = await cycleCutMidUpload(id, 3 * MiB);
    await expectRecoverable(id, err);
    const log2 = statSync(outboxLog(id, seq)).size;
    expect(durable).toBeGreaterThan(0);
    expect(durable).toBeLessThan(log2);
    const mid = await replicaStatus(id);
    expect(mid.applied).toBe(r1.sequence); // nothing of the cut log applied
    expect(mid.received.d0 ?? []).not.toContain(seq);
    expect(await pointDigest(id, r1.sequence)).toBe(atCut1);

    // The link is back: the next cycle finishes that log from the durable offset, then cuts a new one.
    const before = proxy.bytesUp;
    const r2 = await replicateNow(id);
    expect(r2).toMatchObject({ sequence: seq + 1, applied: seq + 1 });
    expect(proxy.bytesUp - before).toBeLessThan(log2); // the log's rest and an empty next one: less than the log
    // seq + 1 is an empty delta on seq (no writes between): equal to the disk at seq's cut.
    expect(await pointDigest(id, seq + 1)).toBe(atCut2);
    await expectHealthyAgain(id);
    await disk.close();
  }, 60_000);

  test('a stall shorter than the timeout is ridden over; one past it is given up and resumed on a new connection', async () => {
    const { id, disk, image } = await protect('stall');
    // 1. A pause of a quarter of the timeout: the same connection carries on, nothing is sent twice.
    const atCut1 = await write(disk, image, 3);
    const shipped1 = await shipped(id);
    const conns1 = proxy.connections.length;
    const before1 = proxy.bytesUp;
    const fault1 = proxy.stallAfter(2 * MiB, LINK_TIMEOUT_MS / 4);
    const r1 = await replicateNow(id);
    const f1 = await fault1;
    const log1 = (await shipped(id)) - shipped1;
    expect(r1.applied).toBe(r1.sequence);
    expect(await pointDigest(id, r1.sequence)).toBe(atCut1);
    // The client never gave up on a connection: the stalled one carried the rest of the upload.
    expect(f1.connection.closedByClient).toBe(false);
    expect(f1.connection.sentUp - f1.connectionBytesUp).toBeGreaterThan(log1 - 2 * MiB - 64 * 1024);
    expect(proxy.connections.slice(conns1).filter((c) => c.closedByClient)).toEqual([]);
    expect(proxy.bytesUp - before1).toBeLessThan(log1 * 1.05); // the log once, plus TLS and HTTP framing

    // 2. A stall twice the timeout: the client gives up on that connection and its retry resumes.
    const atCut2 = await write(disk, image, 4);
    const shipped2 = await shipped(id);
    const fault2 = proxy.stallAfter(2 * MiB, 2 * LINK_TIMEOUT_MS);
    const r2 = await replicateNow(id);
    const f2 = await fault2;
    const log2 = (await shipped(id)) - shipped2;
    expect(r2.applied).toBe(r2.sequence);
    expect(f2.connection).toMatchObject({ closed: true, closedByClient: true });
    expect(proxy.sentAfter(f2)).toBeLessThan(log2);
    expect(await pointDigest(id, r2.sequence)).toBe(atCut2);
    await expectHealthyAgain(id);
    await disk.close();
  }, 60_000);

  test('connections reset during the TLS handshake: a network error, never an authentication one; resumed once they get through', async () => {
    const { id, disk, image } = await protect('handshake');
    const applied0 = (await replicaStatus(id)).applied;
    // 1. Every new connection is closed inside its ClientHello: the cycle fails as a network error.
    const atCut1 = await write(disk, image, 5);
    proxy.dropAll();
    const resetsBefore = proxy.resets;
    proxy.resetHandshakes(1_000);
    const err = await failingCycle(id);
    proxy.resetHandshakes(0);
    expect(proxy.resets).toBeGreaterThan(resetsBefore);
    await expectRecoverable(id, err);
    expect((err as RetryableError).code).toBe('network');
    expect((await replicaStatus(id)).applied).toBe(applied0);
    const r1 = await replicateNow(id);
    expect(r1.applied).toBe(r1.sequence);
    expect(await pointDigest(id, r1.sequence)).toBe(atCut1);

    // 2. Cut mid-upload and the first reconnection reset in its handshake: the next in-place retry resumes.
    const atCut2 = await write(disk, image, 6);
    const shipped2 = await shipped(id);
    const fault = proxy.dropAfter(2 * MiB).then((f) => {
      proxy.resetHandshakes(1);
      proxy.dropAll();
      return f;
    });
    const resets2 = proxy.resets;
    const r2 = await replicateNow(id);
    const f2 = await fault;
    expect(proxy.resets).toBe(resets2 + 1);
    const log2 = (await shipped(id)) - shipped2;
    expect(r2.applied).toBe(r2.sequence);
    expect(proxy.sentAfter(f2)).toBeLessThan(log2);
    expect(await pointDigest(id, r2.sequence)).toBe(atCut2);
    await expectHealthyAgain(id);
    await disk.close();
  }, 60_000);

  test('a byte flipped in transit is refused, nothing of it applied; a corrupted log past TLS is discarded and re-sent whole', async () => {
    const { id, disk, image } = await protect('flip');

    // 1. One byte inverted 2 MiB into the upload, inside a TLS record: the record fails its MAC,
    // the replica drops the connection (the bytes before it stay durable), the client sees an
    // integrity error, and its in-place retry resumes from the durable offset.
    const atCut1 = await write(disk, image, 7);
    const shipped1 = await shipped(id);
    const fault = proxy.flipAfter(2 * MiB);
    const r1 = await replicateNow(id);
    const f1 = await fault;
    const log1 = (await shipped(id)) - shipped1;
    expect(f1.connection).toMatchObject({ closed: true, closedByClient: false }); // the replica hung up
    expect(r1.applied).toBe(r1.sequence);
    expect(proxy.sentAfter(f1)).toBeLessThan(log1);
    expect(await pointDigest(id, r1.sequence)).toBe(atCut1);

    // 2. A byte flipped in every attempt (the streamed send, then the upload of the log it left
    // sealed in the outbox and both in-place retries): the cycle fails with a recoverable
    // integrity error and nothing of the log is applied.
    const atCut2 = await write(disk, image, 8);
    const flips = (async () => {
      const fired = [await proxy.flipAfter(2 * MiB)];
      for (let i = 0; i < 3; i++) fired.push(await proxy.flipAfter(256 * 1024));
      return fired;
    })();
    const err2 = await failingCycle(id);
    const fired = await flips;
    await expectRecoverable(id, err2);
    expect((err2 as RetryableError).code).toBe('integrity');
    expect((await replicaStatus(id)).applied).toBe(r1.sequence);
    expect(await pointDigest(id, r1.sequence)).toBe(atCut1);
    const seq2 = (await primaryView(id)).lastCutSequence!;
    const log2 = statSync(outboxLog(id, seq2)).size;
    const r2 = await replicateNow(id);
    expect(r2).toMatchObject({ sequence: seq2 + 1, applied: seq2 + 1 });
    expect(proxy.sentAfter(fired[3])).toBeLessThan(log2); // resumed, not sent again
    expect(await pointDigest(id, r2.sequence)).toBe(atCut2);

    // 3. A corruption TLS cannot see (the sender's copy damaged after the replica's durable offset):
    // its seal fails, the replica refuses it (422), keeps nothing, and the primary re-sends it whole.
    const atCut3 = await write(disk, image, 10);
    const { err, seq, durable } = await cycleCutMidUpload(id, 3 * MiB);
    await expectRecoverable(id, err);
    const applied2 = (await replicaStatus(id)).applied;
    const damaged = join(cluster.root, 'damaged.hrl');
    const bytes = readFileSync(outboxLog(id, seq));
    bytes[durable + Math.floor((bytes.length - durable) / 2)] ^= 0x01;
    writeFileSync(damaged, bytes);
    const refused = await uploadFile(asPrimary, damaged, pathOf(ROUTES.uploadLog, { id, seq, disk: 'd0' }), { retries: 0 }).catch((e: unknown) => e);
    expect(RetryableError.is(refused) && refused.code === 'integrity', String(refused)).toBe(true);
    const st = await replicaStatus(id);
    expect(st.applied).toBe(applied2);
    expect(st.received.d0 ?? []).not.toContain(seq);
    const head = await send(asPrimary, ROUTES.uploadOffset, { id, seq, disk: 'd0' });
    expect(head.headers[UPLOAD_OFFSET]).toBe('0'); // discarded: the next send starts from zero
    expect(await pointDigest(id, applied2)).toBe(atCut2);
    const before = proxy.bytesUp;
    const r3 = await replicateNow(id);
    expect(r3.applied).toBe(r3.sequence);
    expect(proxy.bytesUp - before).toBeGreaterThanOrEqual(bytes.length); // sent again from the start
    expect(r3.sequence).toBe(seq + 1);
    expect(await pointDigest(id, r3.sequence)).toBe(atCut3);
    await expectHealthyAgain(id);
    await disk.close();
  }, 60_000);

  test('an acknowledged log delivered again (same PUT, raw TLS replay, resumable client) changes nothing', async () => {
    const { id, disk, image } = await protect('dup');
    const atCut = await write(disk, image, 9);
    // Keep a copy of the sealed log while it waits in the outbox, then let it through.
    const { err, seq } = await cycleCutMidUpload(id, 3 * MiB);
    await expectRecoverable(id, err);
    const copy = join(cluster.root, 'dup.hrl');
    copyFileSync(outboxLog(id, seq), copy);
    proxy.record();
    const r = await replicateNow(id);
    proxy.record(false);
    expect(r).toMatchObject({ sequence: seq + 1, applied: seq + 1 }); // seq, then an empty delta on it
    expect(await pointDigest(id, r.sequence)).toBe(atCut);
    const pointsBefore = (await send(b, ROUTES.recoveryPoints, { id })).json<RecoveryPointInfo[]>();
    const statusBefore = await replicaStatus(id);
    const url = pathOf(ROUTES.uploadLog, { id, seq, disk: 'd0' });
    const body = readFileSync(copy);
    const sha = await sha256File(copy);

    // The same PUT again, as the primary: a clean 2xx (the acknowledgement repeated) or 409.
    const again = await asPrimary
      .request('PUT', url, body, { [UPLOAD_OFFSET]: '0', [UPLOAD_LENGTH]: String(body.length), [UPLOAD_CHECKSUM]: `sha256=${sha}`, 'content-type': 'application/octet-stream' })
      .then((res) => res.status, (e: unknown) => (TerminalError.is(e) || RetryableError.is(e)) && e.code === 'invalid-state' ? 409 : e);
    expect([200, 204, 409]).toContain(again);
    // The resumable client sees the upload complete with this file's checksum and sends nothing.
    const sentBefore = asPrimary.counters.bytesSent;
    const res = await uploadFile(asPrimary, copy, url, { retries: 0 });
    expect(res.sha256).toBe(sha);
    expect(asPrimary.counters.bytesSent).toBe(sentBefore);
    // A captured connection's bytes replayed raw: TLS refuses them (fresh keys), nothing reaches HTTP.
    const recorded = proxy.connections.filter((c) => c.recorded && c.sentUp > body.length / 2);
    expect(recorded.length).toBeGreaterThan(0);
    const replay = await proxy.replay(Buffer.concat(recorded[0].recorded!));
    expect(replay.received.toString('latin1')).not.toMatch(/HTTP\/1\.1 2\d\d/);

    const statusAfter = await replicaStatus(id);
    expect(statusAfter).toEqual(statusBefore);
    expect((await send(b, ROUTES.recoveryPoints, { id })).json<RecoveryPointInfo[]>()).toEqual(pointsBefore);
    expect(await pointDigest(id, r.sequence)).toBe(atCut);
    // The primary's next cycle is unaffected.
    const next = await replicateNow(id);
    expect(next).toMatchObject({ sequence: r.sequence + 1, applied: r.sequence + 1 });
    expect(await pointDigest(id, next.sequence)).toBe(atCut);
    await expectHealthyAgain(id);
    await disk.close();
  }, 60_000);
});

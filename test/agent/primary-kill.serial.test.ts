// The primary agent (a separate `drsite agent` process) killed -9 at random moments (8 in
// `npm test`, 50 in `npm run soak`, DRSITE_KILLS to choose; DRSITE_SEED replays them, test/support/kills.ts) of a replication cycle, spread over the cycle's length (cut, copy-before-write, seal, upload,
// acknowledgement), with writes between the kills. After each restart the relationship converges
// by itself, no point the replica acknowledged is lost, every retained point is sha256-equal to a
// disk state the primary cut, and after each restart the latest point equals the disk: tracking
// that could have missed a write is never trusted (the restart resynchronises).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomWrites } from '../../src/demo/workload.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import type { RecoveryPointInfo, RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s } from './cluster.ts';
import { killPlan } from '../support/kills.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const plan = killPlan(import.meta.filename);
const KILLS = plan.kills;
const MiB = 1 << 20;
const ID = 'rel-k';
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;
const image = () => join(cluster.host('host-a').dataDir, 'vms', 'vm-k', 'os.img');
const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  await cluster.startInProcess('host-b');
  b = await cluster.client('host-b');
  await cluster.startProcess('host-a');
  a = await cluster.client('host-a');
  await send(a, ROUTES.createVm, {}, { name: 'vm-k', disks: [{ name: 'os', size: 4 * MiB }] });
  // Two retained points besides the latest, so older acknowledged points are checked too.
  await send(a, ROUTES.createRelationship, {}, { id: ID, vm: 'vm-k', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: { ...policy30s, recoveryPoints: { additional: 2 } } });
  await send(a, ROUTES.startReplication, { id: ID }, undefined, { query: { wait: 'true' } });
}, 60_000);
afterAll(async () => cluster?.destroy());

async function write(seed: number): Promise<void> {
  const c = await NbdClient.connect(join(cluster.host('host-a').dataDir, 'nbd', 'vm-k.sock'), 'os');
  for (const w of randomWrites(48, c.size, seed)) await c.write(w.offset, w.data);
  await c.flush();
  await c.close();
}

const replicaView = async () => (await send(b, ROUTES.getRelationship, { id: ID })).json<RelationshipView>();
const points = async () => (await send(b, ROUTES.recoveryPoints, { id: ID })).json<RecoveryPointInfo[]>();
const pointSha = async (seq: number) => (await send(b, ROUTES.pointDigest, { id: ID, seq, disk: 'os' })).json<{ sha256: string }>().sha256;

describe('primary killed -9 mid-cycle', () => {
  test(`${KILLS} kills at random moments: converges each time, nothing acknowledged lost, every point a cut the primary made`, async () => {
    /** Disk states the primary was asked to cut (no writes run during a cycle here). */
    const states = new Set<string>();
    // One undisturbed cycle tells how long a cycle takes, so kills spread over all of it.
    await write(1);
    states.add(await sha(image()));
    const t0 = Date.now();
    await send(a, ROUTES.replicateNow, { id: ID });
    const cycleMs = Math.max(20, Date.now() - t0);
    let acknowledged = (await replicaView()).appliedSequence;
    let resyncs = 0;
    for (let k = 0; k < KILLS; k++) {
      await write(100 + k);
      states.add(await sha(image()));
      const pending = send(a, ROUTES.replicateNow, { id: ID }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, plan.random() * 1.3 * cycleMs));
      await cluster.kill('host-a', 'SIGKILL');
      await pending;
      // Nothing the replica acknowledged is lost, whatever the primary was doing.
      const applied = (await replicaView()).appliedSequence;
      expect(applied).toBeGreaterThanOrEqual(acknowledged);
      acknowledged = applied;

      await cluster.startProcess('host-a');
      a = await cluster.client('host-a');
      // It converges by itself (each pass as the scheduler would: a forced cycle), and the first
      // cycle that succeeds after the unclean stop compares with the replica instead of trusting tracking.
      let first: string | undefined;
      for (let attempt = 0; attempt < 6; attempt++) {
        const r = await send(a, ROUTES.replicateNow, { id: ID }).then((x) => x.json<{ action: string }>(), () => undefined);
        if (r && first === undefined) first = r.action;
        const v = (await send(a, ROUTES.getRelationship, { id: ID })).json<RelationshipView>();
        if (r && v.state === 'Replicating') break;
      }
      // A resync when the kill left unreplicated writes or an open cut behind; a delta or nothing when
      // the tracker's state on disk still accounts for every write (it persists before acknowledging).
      expect(['resync', 'delta', 'none'], `kill ${k}: the first cycle after the restart`).toContain(first);
      if (first === 'resync') resyncs++;
      const view = (await send(a, ROUTES.getRelationship, { id: ID })).json<RelationshipView>();
      expect(view.state, `kill ${k}: ${JSON.stringify(view.healthReasons)} ${JSON.stringify((view as { lastError?: unknown }).lastError ?? null)}`).toBe('Replicating');
      const pts = await points();
      expect(await pointSha(pts.at(-1)!.sequence), `kill ${k}: the latest point is the disk as it is now`).toBe(await sha(image()));
      for (const p of pts) expect(states.has(await pointSha(p.sequence)), `kill ${k}: point ${p.sequence} is a state the primary cut`).toBe(true);
      acknowledged = (await replicaView()).appliedSequence;
    }
    // Kills mid-cycle leave the tracking untrusted: at least some restarts must have resynchronised.
    expect(resyncs).toBeGreaterThan(0);
    console.log(`${KILLS} kills: ${resyncs} restarts resynchronised, ${KILLS - resyncs} continued from tracking`);
  }, 600_000);
});

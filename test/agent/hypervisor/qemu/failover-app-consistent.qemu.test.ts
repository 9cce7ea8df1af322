// Application-consistent recovery points (appConsistentEvery) with a real qemu-guest-agent in the
// guest: the guest's filesystems are frozen for the cut and thawed after it (the guest goes on
// writing), the point is marked `app`, and `latest-app-consistent` selects it after later crash
// points. A guest without a guest agent gets crash-consistent points within the quiesce timeout
// and health Warning saying why.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { policy30s } from '../../cluster.ts';
import type { RecoveryPointInfo } from '../../../../src/transport/agent-api.ts';
import { createGuest, lastRound, cycle, line, qemuSites, view, type QemuSites } from './failover-sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

let s: QemuSites;
beforeAll(async () => {
  s = await qemuSites();
}, 120_000);
afterAll(async () => s?.cluster.destroy());

const hourly = { ...policy30s, appConsistentEvery: '1h' };
const CHURN = `#!/bin/sh
n=0
while :; do
  n=$((n + 1))
  echo $n >> /mnt/rounds.log
  sync
  echo "DRSITE round $n"
  sleep 0.2
done
`;

async function protectWith(vm: string): Promise<string> {
  const id = `rel-${vm}`;
  await send(s.a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: s.cluster.host('host-b').url }, policy: hourly });
  await send(s.a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  return id;
}

const points = async (id: string) => (await send(s.b, ROUTES.recoveryPoints, { id })).json<RecoveryPointInfo[]>();
describe('application-consistent points through qemu-guest-agent', () => {
  test('a guest with an agent: frozen for the cut, thawed after it, the point marked app and selected by latest-app-consistent', async () => {
    await createGuest(s, 'app-01', CHURN, { run: 'qga,script' });
    const id = await protectWith('app-01');
    await send(s.a, ROUTES.setVmPower, { name: 'app-01' }, { power: 'Running' });
    const serial = s.serial('host-a', 'app-01');
    await line(serial, /DRSITE qga started on \/dev\/vport/);
    await line(serial, /DRSITE round 3\b/);
    const appSeq = await cycle(s.a, id); // the first cycle: the policy's hourly app-consistent point is due
    const after = await lastRound(serial, 'round');
    await line(serial, new RegExp(`DRSITE round ${after + 3}\\b`)); // thawed: it writes on
    const crashSeq = await cycle(s.a, id); // within the hour: crash-consistent
    const pts = await points(id);
    expect(pts.find((p) => p.sequence === appSeq)?.consistency).toBe('app');
    expect(pts.find((p) => p.sequence === crashSeq)?.consistency).toBe('crash');
    expect((await view(s.a, id)).health).toBe('Normal');
    const tf = (await send(s.b, ROUTES.testFailover, { id }, { recoveryPoint: 'latest-app-consistent' })).json<{ recoveryPoint: { sequence: number; consistency: string } }>();
    expect(tf.recoveryPoint).toMatchObject({ sequence: appSeq, consistency: 'app' });
    await send(s.b, ROUTES.cleanupTestFailover, { id });
  }, 180_000);

  test('a guest without an agent: crash-consistent points within the timeout, health Warning saying why', async () => {
    await createGuest(s, 'plain-01', CHURN, { run: 'script' });
    const id = await protectWith('plain-01');
    await send(s.a, ROUTES.setVmPower, { name: 'plain-01' }, { power: 'Running' });
    await line(s.serial('host-a', 'plain-01'), /DRSITE round 3\b/);
    const seq = await cycle(s.a, id);
    expect((await points(id)).find((p) => p.sequence === seq)?.consistency).toBe('crash');
    const v = await view(s.a, id);
    expect(v.state).toBe('Replicating');
    expect(v.health).toBe('Warning');
    expect(v.healthReasons.join('\n')).toMatch(/no application-consistent point: VM "plain-01": the guest agent did not answer guest-sync-delimited within 10000 ms/);
  }, 180_000);
});

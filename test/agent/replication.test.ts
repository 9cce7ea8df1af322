// Two `drsite agent` processes on loopback with mutual TLS: a VM with two 64 MiB disks is
// protected while a workload writes to it, then 20 cycles of random writes; after every cycle the
// replica's latest point, and every older point it retains, equal the primary at that cut.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites, runWorkload } from '../../src/demo/workload.ts';
import type { RecoveryPointInfo, RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, sha256File, twoHosts } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;

beforeAll(async () => {
  ({ cluster, a, b } = await twoHosts({ processes: true }));
});
afterAll(async () => cluster?.destroy());

async function pointDigest(rel: string, seq: number, disk: string): Promise<string> {
  return (await send(b, ROUTES.pointDigest, { id: rel, seq, disk })).json<{ sha256: string }>().sha256;
}

describe('host-to-host replication between agent processes', () => {
  test('initial replication under load, then 20 cycles: every retained point equals its cut', async () => {
    await send(a, ROUTES.createVm, {}, { name: 'app', disks: [{ name: 'os', size: 64 * MiB }, { name: 'data', size: 64 * MiB }] });
    const vmDir = join(cluster.host('host-a').dataDir, 'vms', 'app');
    const socketPath = join(cluster.host('host-a').dataDir, 'nbd', 'app.sock');
    // Something on the disks before protection starts.
    await runWorkload({ socketPath, exportName: 'os' }, { pattern: 'sequential', seed: 7, totalBytes: 16 * MiB, blockSize: 1 * MiB, compressible: 0.5 });

    await send(a, ROUTES.createRelationship, {}, {
      id: 'rel-app',
      vm: 'app',
      replica: { name: 'host-b', endpoint: cluster.host('host-b').url },
      // Cycles are the test's (replicate-now): a 5 m period keeps the agent's own schedule out of a slow run.
      policy: { ...policy30s, frequency: '5m' },
    });
    // Initial replication while the workload keeps writing to both disks.
    const load = Promise.all([
      runWorkload({ socketPath, exportName: 'os' }, { pattern: 'random', seed: 11, totalBytes: 8 * MiB, queueDepth: 4 }),
      runWorkload({ socketPath, exportName: 'data' }, { pattern: 'mixed', seed: 12, totalBytes: 8 * MiB, queueDepth: 4, zeroFraction: 0.1 }),
    ]);
    await send(a, ROUTES.startReplication, { id: 'rel-app' }, undefined, { query: { wait: 'true' } });
    await load;
    let view = (await send(a, ROUTES.getRelationship, { id: 'rel-app' })).json<RelationshipView>();
    expect(view.state).toBe('Replicating');
    expect(view.initialReplication).toMatchObject({ method: 'network', bytesDone: 128 * MiB, bytesTotal: 128 * MiB });

    // Writes made during the initial copy ship in the next delta.
    const cuts = new Map<number, Record<string, string>>();
    const cycle = async () => {
      const r = (await send(a, ROUTES.replicateNow, { id: 'rel-app' })).json<{ sequence: number; applied: number }>();
      cuts.set(r.sequence, { os: await sha256File(join(vmDir, 'os.img')), data: await sha256File(join(vmDir, 'data.img')) });
      expect(r.applied).toBe(r.sequence);
      return r.sequence;
    };
    await cycle();

    const os = await NbdClient.connect(socketPath, 'os');
    const data = await NbdClient.connect(socketPath, 'data');
    for (let i = 0; i < 20; i++) {
      await Promise.all([
        ...randomWrites(64, os.size, 1000 + i).map((w) => os.write(w.offset, w.data)),
        ...randomWrites(32, data.size, 2000 + i).map((w) => data.write(w.offset, w.data)),
      ]);
      const seq = await cycle();
      for (const disk of ['os', 'data']) expect(await pointDigest('rel-app', seq, disk), `${disk} at ${seq}`).toBe(cuts.get(seq)![disk]);
      const points = (await send(b, ROUTES.recoveryPoints, { id: 'rel-app' })).json<RecoveryPointInfo[]>();
      expect(points.at(-1)!.sequence).toBe(seq);
      for (const p of points.slice(0, -1)) {
        for (const disk of ['os', 'data']) expect(await pointDigest('rel-app', p.sequence, disk)).toBe(cuts.get(p.sequence)?.[disk]);
      }
    }
    await os.close();
    await data.close();

    view = (await send(a, ROUTES.getRelationship, { id: 'rel-app' })).json<RelationshipView>();
    expect(view).toMatchObject({ state: 'Replicating', health: 'Normal', pendingBytes: 0 });
    expect(view.statistics.successfulReplicationCount).toBeGreaterThanOrEqual(22);
    const replicaView = (await send(b, ROUTES.getRelationship, { id: 'rel-app' })).json<RelationshipView>();
    expect(replicaView).toMatchObject({ role: 'Replica', state: 'Replicating', appliedSequence: view.appliedSequence });
  });

  test('qemu-io writes through the NBD export are read back and replicated', async () => {
    await send(a, ROUTES.createVm, {}, { name: 'qvm', disks: [{ name: 'disk0', size: 16 * MiB }] });
    const socketPath = join(cluster.host('host-a').dataDir, 'nbd', 'qvm.sock');
    const uri = `nbd+unix:///disk0?socket=${socketPath}`;
    const qemuIo = (...cmds: string[]) =>
      new Promise<string>((resolve, reject) => {
        const p = spawn('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (out += d));
        p.on('error', reject);
        p.on('close', (code) => (code === 0 && !/(Pattern verification failed|error)/i.test(out) ? resolve(out) : reject(new Error(`qemu-io: ${out}`))));
      });
    await send(a, ROUTES.createRelationship, {}, { id: 'rel-qvm', vm: 'qvm', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
    await send(a, ROUTES.startReplication, { id: 'rel-qvm' }, undefined, { query: { wait: 'true' } });
    await qemuIo('write -P 0xab 0 1M', 'write -P 0x5c 5M 512k', 'write -z 5M 4k', 'flush');
    await qemuIo('read -P 0xab 0 1M', 'read -P 0x5c 5246976 508k', 'read -P 0 5M 4k');
    const r = (await send(a, ROUTES.replicateNow, { id: 'rel-qvm' })).json<{ sequence: number; bytes: number }>();
    expect(r.bytes).toBeGreaterThanOrEqual(1 * MiB);
    const want = await sha256File(join(cluster.host('host-a').dataDir, 'vms', 'qvm', 'disk0.img'));
    expect(await pointDigest('rel-qvm', r.sequence, 'disk0')).toBe(want);
  });
});

// A QEMU VM drsite did not start, protected through the agent API: POST /v1/vms/adopt with its QMP
// socket and block nodes, then the same relationship verbs as any VM. Only the blocks the "guest"
// wrote ship (bytes shipped <= 1.2x bytes written), each point equals QEMU's disks at the cut, and
// an agent restart (bitmaps added anew) resynchronises instead of trusting what it cannot know.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RetryableError, TerminalError } from '../../../../src/model/errors.ts';
import type { RelationshipView } from '../../../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../../../src/transport/mtls.ts';
import { Cluster, policy30s } from '../../cluster.ts';
import { startVm, type TestVm } from './qemu-vm.ts';
import { ROUTES, send, sendRaw } from '../../../support/agent-client.ts';

const MiB = 1 << 20;
const SIZES = [16 * MiB, 8 * MiB];
let dir: string;
let disks: string[];
let vm: TestVm;
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;
const ID = 'rel-ext';

const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
const view = async () => (await send(a, ROUTES.getRelationship, { id: ID })).json<RelationshipView>();
async function expectReplicaEqualsQemu(seq: number): Promise<void> {
  for (const [i, id] of ['os', 'data'].entries()) {
    const got = (await send(b, ROUTES.pointDigest, { id: ID, seq, disk: id })).json<{ sha256: string }>().sha256;
    expect(got, `${id} at point ${seq}`).toBe(sha(await readFile(disks[i]!)));
  }
}
const cycle = async () => (await send(a, ROUTES.replicateNow, { id: ID })).json<{ action: string; sequence: number; applied: number; bytes: number }>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drsite-adopt-'));
  disks = SIZES.map((_, i) => join(dir, `disk${i}.raw`));
  for (const [i, p] of disks.entries()) {
    const fh = await open(p, 'w');
    await fh.write(randomBytes(2 * MiB), 0, 2 * MiB, 0);
    await fh.truncate(SIZES[i]!);
    await fh.close();
  }
  vm = await startVm(dir, disks);
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  await cluster.startInProcess('host-a');
  await cluster.startInProcess('host-b');
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
}, 60_000);

afterAll(async () => {
  await vm?.kill();
  await cluster?.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('an adopted QEMU VM through the agent', () => {
  test('bad adoption requests are refused naming what is wrong', async () => {
    const refused = async (body: object) => {
      const e = await sendRaw(a, ROUTES.adoptVm, {}, body).then(() => undefined, (err: unknown) => err);
      // Unreachable is retryable (the VM may come up), a missing node terminal: both refuse.
      if (!TerminalError.is(e) && !RetryableError.is(e)) throw new Error(`expected a refusal, got ${String(e)}`);
      return (e as Error).message;
    };
    expect(await refused({ name: 'ext', qmpSocket: join(dir, 'nope.sock'), disks: [{ name: 'os', node: 'disk0' }] })).toMatch(/nope\.sock/);
    expect(await refused({ name: 'ext', qmpSocket: vm.drsiteSocket, disks: [{ name: 'os', node: 'no-such-node' }] })).toMatch(/no block node "no-such-node" \(disk os\)/);
    expect((await send(a, ROUTES.listVms, {})).json<unknown[]>()).toEqual([]);
  });

  test('adopt, protect: the initial copy and deltas of only the written blocks equal QEMU at each cut', async () => {
    const adopted = (await send(a, ROUTES.adoptVm, {}, { name: 'ext', qmpSocket: vm.drsiteSocket, disks: [{ name: 'os', node: 'disk0' }, { name: 'data', node: 'disk1' }] })).json<{ name: string; disks: { name: string; size: number }[] }>();
    expect(adopted.disks).toEqual([{ name: 'os', size: SIZES[0] }, { name: 'data', size: SIZES[1] }]);
    await send(a, ROUTES.createRelationship, {}, { id: ID, vm: 'ext', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
    await send(a, ROUTES.startReplication, { id: ID }, undefined, { query: { wait: 'true' } });
    const v = await view();
    expect(v.state).toBe('Replicating');
    const pts = (await send(b, ROUTES.recoveryPoints, { id: ID })).json<{ sequence: number }[]>();
    await expectReplicaEqualsQemu(pts.at(-1)!.sequence);
    for (let round = 0; round < 2; round++) {
      let written = 0;
      for (let k = 0; k < 6; k++) {
        const disk = k % 2;
        const len = (1 + ((k * 5 + round) % 12)) * 4096;
        const off = ((k * 211 + round * 499) % (SIZES[disk]! / 4096 - 16)) * 4096;
        await vm.write(disk, 0x20 + round * 8 + k, off, len);
        written += len;
      }
      const r = await cycle();
      expect(r).toMatchObject({ action: 'delta' });
      expect(r.applied).toBe(r.sequence);
      expect(r.bytes).toBeGreaterThan(0);
      expect(r.bytes).toBeLessThanOrEqual(1.2 * written);
      await expectReplicaEqualsQemu(r.sequence);
    }
  }, 120_000);

  test('an agent restart: the VM is adopted again and the relationship resynchronises rather than trust new bitmaps', async () => {
    await cluster.stopInProcess('host-a');
    await vm.write(0, 0x77, 5 * 4096, 3 * 4096); // while no agent watches
    await cluster.startInProcess('host-a');
    a = await cluster.client('host-a');
    expect((await send(a, ROUTES.getVm, { name: 'ext' })).json<{ power: string }>().power).toBe('Running');
    expect((await view()).state).toBe('ResynchronizationRequired');
    const r = (await send(a, ROUTES.resync, { id: ID })).json<{ action: string; sequence: number }>();
    expect(r.action).toBe('resync');
    await expectReplicaEqualsQemu(r.sequence);
    expect((await view()).state).toBe('Replicating');
    await vm.write(1, 0x78, 0, 8192);
    const d = await cycle();
    expect(d).toMatchObject({ action: 'delta', bytes: 8192 });
    await expectReplicaEqualsQemu(d.sequence);
  }, 120_000);
});

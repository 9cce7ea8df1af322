// Guest liveness on both sites: a VM whose kernel hangs (silent, see test/agent/hypervisor/qemu/hang-kernel.ts) makes
// its relationship Warning (guest-not-booting) on the primary while it runs there, and again on the
// recovery site for a test failover's <vm>-Test and once an unplanned failover starts it from its
// replica: after a failover, Normal must mean the VM works. The boot timeout is 5 s here (the
// site's qemu.bootTimeout).
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { RelationshipView } from '../../../../src/transport/agent-api.ts';
import { Cluster } from '../../cluster.ts';
import { waitFor } from './guest.ts';
import { writeHangKernel } from './hang-kernel.ts';
import { cycle, powerState, protect, view, type QemuSites } from './failover-sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const SITE = ['hypervisor: qemu', 'qemu: { accel: tcg, memoryMiB: 64, bootTimeout: 5s, shutdownTimeout: 10s, networks: { lan: user, lan-dr: user } }'];
let s: QemuSites;
let kernel: string;
beforeAll(async () => {
  const cluster = await Cluster.create([{ name: 'host-a', config: SITE }, { name: 'host-b', config: SITE }]);
  await cluster.startInProcess('host-a');
  await cluster.startInProcess('host-b');
  s = {
    cluster,
    a: await cluster.client('host-a', undefined, 60_000),
    b: await cluster.client('host-b', undefined, 60_000),
    vmDir: (host, vm) => join(cluster.host(host).dataDir, 'vms', vm),
    serial: (host, vm) => join(cluster.host(host).dataDir, 'vms', vm, 'serial.log'),
  };
  kernel = await writeHangKernel(join(cluster.root, 'hang.mb'));
}, 120_000);
afterAll(async () => s?.cluster.destroy());

const notBooting = (vm: string) => (v: RelationshipView) =>
  v.health === 'Warning' && v.healthReasons.includes(`guest-not-booting: VM "${vm}" runs but shows no boot progress: no serial console output and no guest agent reply within 5 s since QEMU started it (accel tcg)`)
    ? v
    : undefined;

test('a guest that hangs is Warning on the primary, and on the recovery site for a test failover and after an unplanned failover', async () => {
  const vm = 'stuck-01';
  await send(s.a, ROUTES.createVm, {}, { name: vm, disks: [{ name: 'os', size: 4 << 20 }], adapters: [{ name: 'eth0', network: 'lan' }], power: 'Off', boot: { kernel } });
  const id = await protect(s, vm);
  expect((await view(s.a, id)).health).toBe('Normal'); // off: nothing to boot, nothing to say
  await send(s.a, ROUTES.setVmPower, { name: vm }, { power: 'Running' });

  const onA = await waitFor('primary Warning', async () => notBooting(vm)(await view(s.a, id)), 60_000);
  expect(onA.role).toBe('Primary');
  const guest = (await powerState(s.a, vm)) as { guest?: { state: string } };
  expect(guest.guest?.state).toBe('not-booting');
  // Listed the same way (what a remote site's observation reads).
  const listed = (await send(s.a, ROUTES.listRelationships, {})).json<RelationshipView[]>().find((v) => v.id === id)!;
  expect(listed.healthReasons).toEqual(onA.healthReasons);

  await cycle(s.a, id);
  // A test failover's <vm>-Test that does not boot is named on the recovery site's view.
  const tf = (await send(s.b, ROUTES.testFailover, { id }, { recoveryPoint: 'latest', adapters: [{ name: 'eth0' }] })).json<{ testVm: string }>();
  const onTest = await waitFor('test failover Warning', async () => notBooting(tf.testVm)(await view(s.b, id)), 60_000);
  expect(onTest.role).toBe('Replica');
  await send(s.b, ROUTES.cleanupTestFailover, { id });
  expect((await view(s.b, id)).health).toBe('Normal');

  await send(s.a, ROUTES.setVmPower, { name: vm }, { power: 'Off', force: true, timeoutMs: 0 });
  // Powered off, it is no longer a guest that should be booting.
  await waitFor('primary back to Normal', async () => ((await view(s.a, id)).health === 'Normal' ? true : undefined), 30_000);

  const fo = (await send(s.b, ROUTES.failover, { id }, { recoveryPoint: 'latest', adapters: [{ name: 'eth0', network: 'lan-dr' }] })).json<{ state: string }>();
  expect(fo.state).toBe('FailoverWaitingCompletion');
  const onB = await waitFor('recovery site Warning', async () => notBooting(vm)(await view(s.b, id)), 60_000);
  expect(onB.role).toBe('Replica');
  expect(onB.state).toBe('FailoverWaitingCompletion');
}, 240_000);

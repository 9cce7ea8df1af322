// Two agents whose site runs real guests (`hypervisor: qemu`, TCG: nested KVM guests die on this
// machine), and the plumbing the failover tests share: a VM created through the agent API whose
// ext4 disk (with the test's /drsite/run.sh) is written through the agent's NBD export, serial
// console lines, and disk digests.
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeGuestDisk } from '../../../../src/demo/test-guest.ts';
import { NbdClient } from '../../../../src/nbd/client.ts';
import type { RelationshipView } from '../../../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../../../src/transport/mtls.ts';
import { Cluster, policy30s } from '../../cluster.ts';
import { append, sha256, testGuest, waitForLine, type GuestRun } from './guest.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

export const MiB = 1 << 20;
// Both sites' networks are QEMU user-mode networking: a NIC with a backend, nothing to set up.
export const QEMU_SITE = ['hypervisor: qemu', 'qemu: { accel: tcg, memoryMiB: 256, shutdownTimeout: 60s, networks: { lan: user, lan-dr: user } }'];

export interface QemuSites {
  cluster: Cluster;
  a: MtlsClient;
  b: MtlsClient;
  vmDir(host: string, vm: string): string;
  serial(host: string, vm: string): string;
}

export async function qemuSites(): Promise<QemuSites> {
  await testGuest(); // built (or found in .cache) before any agent needs its kernel
  const cluster = await Cluster.create([
    { name: 'host-a', config: QEMU_SITE },
    { name: 'host-b', config: QEMU_SITE },
  ]);
  await cluster.startInProcess('host-a');
  await cluster.startInProcess('host-b');
  return {
    cluster,
    a: await cluster.client('host-a', undefined, 180_000),
    b: await cluster.client('host-b', undefined, 180_000),
    vmDir: (host, vm) => join(cluster.host(host).dataDir, 'vms', vm),
    serial: (host, vm) => join(cluster.host(host).dataDir, 'vms', vm, 'serial.log'),
  };
}

/**
 * Creates `vm` on host-a (off) with one ext4 `os` disk holding `/drsite/run.sh`, written through
 * the agent's export (so the tracker sees it), booting the test guest with `run`.
 */
export async function createGuest(s: QemuSites, vm: string, runSh: string, run: GuestRun, size = 32 * MiB): Promise<void> {
  const g = await testGuest();
  await send(s.a, ROUTES.createVm, {}, {
    name: vm,
    disks: [{ name: 'os', size }],
    adapters: [{ name: 'eth0', network: 'lan' }],
    power: 'Off',
    boot: { kernel: g.kernel, initrd: g.initrd, append: append(run) },
  });
  const dir = await mkdtemp(join(tmpdir(), 'drsite-guest-disk-'));
  try {
    const image = join(dir, 'os.img');
    await writeFile(image, '');
    await truncate(image, size);
    await makeGuestDisk(image, { '/drsite/run.sh': runSh });
    const c = await NbdClient.connect(join(s.cluster.host('host-a').dataDir, 'nbd', `${vm}.sock`), 'os');
    const data = await readFile(image);
    for (let at = 0; at < data.length; at += 4 * MiB) await c.write(at, data.subarray(at, Math.min(data.length, at + 4 * MiB)));
    await c.flush();
    await c.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function protect(s: QemuSites, vm: string): Promise<string> {
  const id = `rel-${vm}`;
  await send(s.a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: s.cluster.host('host-b').url }, policy: policy30s });
  await send(s.a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  return id;
}

export async function cycle(c: MtlsClient, id: string): Promise<number> {
  const r = (await send(c, ROUTES.replicateNow, { id })).json<{ sequence: number; applied: number }>();
  if (r.applied !== r.sequence) throw new Error(`cycle ${r.sequence} of ${id} was not applied (applied ${r.applied})`);
  return r.sequence;
}

export const view = async (c: MtlsClient, id: string) => (await send(c, ROUTES.getRelationship, { id })).json<RelationshipView>();

export async function pointSha(c: MtlsClient, id: string, seq: number, disk = 'os'): Promise<string> {
  return (await send(c, ROUTES.pointDigest, { id, seq, disk })).json<{ sha256: string }>().sha256;
}

/** sha256 of a disk as the agent serves it (the guest must be off for this to be a handover's digest). */
export async function exportSha(s: QemuSites, host: string, vm: string, disk = 'os'): Promise<string> {
  const c = await NbdClient.connect(join(s.cluster.host(host).dataDir, 'nbd', `${vm}.sock`), disk);
  const parts: Buffer[] = [];
  for (let at = 0; at < c.size; at += 4 * MiB) parts.push(await c.read(at, Math.min(4 * MiB, c.size - at)));
  await c.close();
  return sha256(Buffer.concat(parts));
}

export async function powerState(c: MtlsClient, vm: string): Promise<{ power: string; detail?: string; crashed?: { message: string } }> {
  return (await send(c, ROUTES.getVm, { name: vm })).json();
}

/** The last round a writing guest reported (serial lines `DRSITE <word> <n>`), 0 before the first. */
export async function lastRound(serial: string, word = 'churn'): Promise<number> {
  const all = [...(await readFile(serial, 'utf8')).matchAll(new RegExp(`DRSITE ${word} (\\d+)`, 'g'))];
  return all.length ? Number(all.at(-1)![1]) : 0;
}

/** Waits for the serial console line matching `re` (QEMU truncates the log at each start). */
export function line(path: string, re: RegExp, timeoutMs = 90_000): Promise<RegExpMatchArray> {
  return waitForLine(path, re, timeoutMs);
}

export { sha256 };

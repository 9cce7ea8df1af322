// Two agents on this host whose sites are `hypervisor: libvirt` on the same libvirtd
// (qemu:///system): each with its own runDir, and host-b with a domain prefix so the domains it
// defines never share a name with host-a's. The protected VM is a domain the test defined itself.
import type { RelationshipView } from '../../../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../../../src/transport/mtls.ts';
import { Cluster, policy30s } from '../../cluster.ts';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll } from 'vitest';
import { testGuest, writeNextFileScript } from '../qemu/guest.ts';
import { cleanup, defineGuestDomain, defineIsolatedNetwork, ensureLibvirtd, type GuestDomain } from './libvirt.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

export interface LibvirtSites {
  cluster: Cluster;
  a: MtlsClient;
  b: MtlsClient;
  /** Domain name prefix of host-b's domains. */
  prefixB: string;
  runDirs: string[];
  destroy(): Promise<void>;
}

/** `recoveryBootTimeout`: host-b's libvirt bootTimeout (its default otherwise). */
export async function libvirtSites(sfx: string, opts: { recoveryBootTimeout?: string } = {}): Promise<LibvirtSites> {
  await ensureLibvirtd();
  await testGuest();
  const runDirs = [`/var/lib/libvirt/drsite/test-${sfx}-a`, `/var/lib/libvirt/drsite/test-${sfx}-b`];
  const prefixB = `b${sfx}-`;
  const cluster = await Cluster.create([
    { name: 'host-a', config: ['hypervisor: libvirt', `libvirt: { runDir: ${runDirs[0]}, shutdownTimeout: 60s }`] },
    { name: 'host-b', config: ['hypervisor: libvirt', `libvirt: { runDir: ${runDirs[1]}, domainPrefix: ${prefixB}, shutdownTimeout: 60s${opts.recoveryBootTimeout ? `, bootTimeout: ${opts.recoveryBootTimeout}` : ''} }`] },
  ]);
  await cluster.startInProcess('host-a');
  await cluster.startInProcess('host-b');
  return {
    cluster,
    a: await cluster.client('host-a', undefined, 180_000),
    b: await cluster.client('host-b', undefined, 180_000),
    prefixB,
    runDirs,
    async destroy() {
      await cluster.destroy();
      for (const d of runDirs) await rm(d, { recursive: true, force: true });
    },
  };
}

/**
 * The failover tests' setup, as hooks of the calling file: both sites, isolated libvirt networks
 * (the guest's interface on the first), and domain `name` running the test guest with `run`, whose
 * script writes a.txt (A) on its first boot and b.txt (B) on the next. Cleanup undefines the domain,
 * host-b's copy and its `-Test`, and the networks.
 */
export function writingGuest(sfx: string, name: string, nets: readonly string[], run: string, files: { A: Buffer; B: Buffer }): { readonly sites: LibvirtSites; readonly dom: GuestDomain } {
  let sites: LibvirtSites | undefined;
  let dom: GuestDomain | undefined;
  beforeAll(async () => {
    sites = await libvirtSites(sfx);
    for (const n of nets) await defineIsolatedNetwork(n);
    dom = await defineGuestDomain(name, { run: { run }, files: { '/drsite/run.sh': writeNextFileScript(files.A, files.B) }, network: nets[0] });
  }, 180_000);
  afterAll(async () => {
    const b = sites?.prefixB ?? '';
    await sites?.destroy();
    await cleanup([name, `${b}${name}`, `${b}${name}-Test`], [...nets]);
  }, 60_000);
  return {
    get sites() {
      return sites!;
    },
    get dom() {
      return dom!;
    },
  };
}

export async function protect(s: LibvirtSites, vm: string, id = `rel-${vm}`): Promise<string> {
  await send(s.a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: s.cluster.host('host-b').url }, policy: policy30s });
  await send(s.a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  return id;
}

export async function cycle(c: MtlsClient, id: string): Promise<number> {
  return (await cycleOutcome(c, id)).sequence;
}

export async function cycleOutcome(c: MtlsClient, id: string): Promise<{ sequence: number; action: string; bytes?: number }> {
  const r = (await send(c, ROUTES.replicateNow, { id })).json<{ sequence: number; applied: number; action: string; bytes?: number }>();
  if (r.applied !== r.sequence) throw new Error(`cycle ${r.sequence} of ${id} was not applied (applied ${r.applied})`);
  return r;
}

export const view = async (c: MtlsClient, id: string) => (await send(c, ROUTES.getRelationship, { id })).json<RelationshipView>();

export async function pointSha(c: MtlsClient, id: string, seq: number, disk = 'vda'): Promise<string> {
  return (await send(c, ROUTES.pointDigest, { id, seq, disk })).json<{ sha256: string }>().sha256;
}

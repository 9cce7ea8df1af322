// A converged fleet for the reconciler benchmarks: N ProtectedVMs over S embedded host sites (the
// agents run in this process, as `drsite run` runs them, and answer over real mutual TLS on
// loopback), each VM on site i replicating to site i+1. The protections are made with the calls
// and vault marks the executor's enable-protection and start-initial-replication make, 8 at a time
// (the reconciler applies actions one by one: about 40 s for 1,000 VMs on an idle 2-core host, most
// of it SQLite fsyncs), then reconcile passes run until one reports convergence.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { applyDefaults } from '../../src/config/index.ts';
import type { DesiredState, ProtectedVM, ReplicationPolicy, ResolvedReplicationPolicy, Site } from '../../src/model/desired.ts';
import { reconcileOnce, type PassOptions } from '../../src/reconciler/apply.ts';
import { relationshipId } from '../../src/reconciler/relationship-ids.ts';
import { setStatusFields } from '../../src/reconciler/status-fields.ts';
import { openSites, type SiteSet } from '../../src/sites/open-sites.ts';
import { silentLogger } from '../../src/transport/logger.ts';
import { Vault } from '../../src/vault/vault.ts';
import { freePort } from '../../test/agent/cluster.ts';

export interface FleetSpec {
  readonly vms: number;
  readonly sites: number;
  /** Size of each VM's one disk, bytes. */
  readonly diskBytes: number;
  /** The declared policy's frequency: long enough that no scheduled cycle runs during the bench. */
  readonly frequency: '5m' | '15m';
}

export interface ConvergedFleet {
  readonly desired: DesiredState;
  readonly sites: SiteSet;
  readonly vault: Vault;
  readonly stateDir: string;
  /** What bringing the fleet to convergence took: VMs created and protected, then reconcile passes. */
  readonly setup: { readonly protectMs: number; readonly convergeMs: number; readonly passes: number; readonly actions: readonly string[] };
  /** Options for one more reconcile pass over this fleet. */
  pass(): PassOptions;
  close(): Promise<void>;
}

const meta = { apiVersion: 'drsite.dev/v1' as const };
const vmName = (i: number) => `vm-${String(i).padStart(4, '0')}`;

async function declare(spec: FleetSpec): Promise<DesiredState> {
  const sites: Site[] = [];
  for (let s = 0; s < spec.sites; s++) {
    sites.push(applyDefaults<Site>({
      ...meta, kind: 'Site', metadata: { name: `site-${s}` },
      spec: { type: 'host', hypervisor: 'files', replicaServer: { enabled: true, port: await freePort() } },
    }));
  }
  const policy = applyDefaults<ReplicationPolicy>({
    ...meta, kind: 'ReplicationPolicy', metadata: { name: `every-${spec.frequency}` }, spec: { frequency: spec.frequency, recoveryPoints: { additional: 0 } },
  }) as ResolvedReplicationPolicy;
  const protectedVms = Array.from({ length: spec.vms }, (_, i): ProtectedVM => applyDefaults<ProtectedVM>({
    ...meta, kind: 'ProtectedVM', metadata: { name: vmName(i) },
    spec: { vm: vmName(i), primary: `site-${i % spec.sites}`, replica: `site-${(i + 1) % spec.sites}`, policy: policy.metadata.name },
  }));
  return { sites, policies: [policy], networkMappings: [], protectedVms, recoveryPlans: [], sources: {} };
}

/**
 * Opens the sites under `root`; creates every VM on its primary site and protects it as the
 * executor would (the vault's managed mark and policy name first, then the relationship with its
 * deterministic id, then the initial replication); then runs reconcile passes until one reports
 * convergence (they record the status and would plan whatever the setup left undone).
 */
export async function convergedFleet(root: string, spec: FleetSpec, log: (m: string) => void): Promise<ConvergedFleet> {
  let desired: DesiredState;
  let stateDir: string;
  let sites: SiteSet;
  for (let attempt = 1; ; attempt++) {
    desired = await declare(spec);
    stateDir = join(root, attempt === 1 ? 'state' : `state-${attempt}`);
    try {
      // Scheduling stays on, as in `drsite run`: every relationship has its loop (none is due during the bench).
      sites = await openSites(desired, { stateDir, cwd: root, log: silentLogger });
      break;
    } catch (e) {
      // A port freePort found free can be taken by another process before the site listens on it.
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 3) throw e;
      log(`a site's port was taken (${(e as Error).message}): new ports, new state directory`);
    }
  }
  const vault = Vault.open(join(root, 'vault.db'));
  const pass = (): PassOptions => ({ desired, sites, vault, stateDir });
  try {
    let t = performance.now();
    const vms = desired.protectedVms;
    const policy = desired.policies[0];
    vault.transaction(() => {
      for (const v of vms) setStatusFields(vault, v.metadata.name, { managed: true, policyName: policy.metadata.name });
    });
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < vms.length) {
        const v = vms[next++];
        const primary = sites.get(v.spec.primary);
        const replica = sites.get(v.spec.replica);
        const id = relationshipId(v.metadata.name);
        await primary.createVm({ name: v.spec.vm, disks: [{ name: 'd0', size: spec.diskBytes }] });
        await primary.createRelationship({ id, vm: v.spec.vm, replica: { name: replica.name, endpoint: replica.endpoint }, policy: policy.spec, excludeDisks: [] });
        await primary.startReplication(id);
      }
    }));
    const protectMs = performance.now() - t;
    log(`${vms.length} VMs created and protected on ${spec.sites} embedded sites in ${(protectMs / 1000).toFixed(1)} s; converging`);
    t = performance.now();
    let passes = 0;
    const actions: string[] = [];
    for (;;) {
      const r = await reconcileOnce(pass());
      passes++;
      actions.push(...r.plan.actions.map((x) => `${x.type} ${x.target.name}`));
      if (r.converged) break;
      if (performance.now() - t > 180_000) throw new Error(`the fleet did not converge in ${passes} passes (last plan: ${r.plan.actions.length} actions)`);
      await new Promise((res) => setTimeout(res, 250));
    }
    return { desired, sites, vault, stateDir, setup: { protectMs, convergeMs: performance.now() - t, passes, actions }, pass, close: async () => {
      await sites.close();
      vault.close();
    } };
  } catch (e) {
    await sites.close();
    vault.close();
    throw e;
  }
}

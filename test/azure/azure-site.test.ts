// The azure Site as the reconciler sees it: unreachable or unauthenticated storage is an
// unreachable site naming why (never a crash of the pass), verbs it cannot serve are refused by
// name, and a failover with no recovery point yet changes nothing. Azurite stands in for Azure
// Storage, which cannot be reached from here.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AzureBlobLink } from '../../src/azure/blob-link.ts';
import { loadDesiredStateFromSources } from '../../src/config/index.ts';
import type { DesiredState } from '../../src/model/desired.ts';
import { TerminalError } from '../../src/model/errors.ts';
import { AzureSite } from '../../src/sites/azure-site.ts';
import { ACCOUNT, startAzurite, type Azurite } from './azurite.ts';
import { AzureFailoverState } from '../../src/azure/failover-state.ts';
import { ManualClock } from '../../src/model/clock.ts';
import { prng } from '../core/helpers.ts';
import { provideTerraform } from '../../src/model/terraform.ts';

// What bin/drsite.mjs does at start: the entry point provides src/'s Terraform port.
provideTerraform(() => import('../../constructs/synth.ts'));
import { TestVm, createRequest, newKeys } from './driver.ts';

const YAML = `
apiVersion: drsite.dev/v1
kind: Site
metadata: {name: site-a}
spec: {type: host}
---
apiVersion: drsite.dev/v1
kind: Site
metadata: {name: azure-dr}
spec:
  type: azure
  storageAccount: ${ACCOUNT}
  container: site-tests
  credentials: {connectionStringEnv: DRSITE_SITE_TEST_AZURE}
  resourceGroup: rg-dr
  location: westeurope
  network: {virtualNetwork: vnet-dr}
---
apiVersion: drsite.dev/v1
kind: ReplicationPolicy
metadata: {name: p}
spec: {frequency: 5m}
---
apiVersion: drsite.dev/v1
kind: ProtectedVM
metadata: {name: web-01}
spec: {vm: web-01, primary: site-a, replica: azure-dr, policy: p}
`;

let az: Azurite;
let desired: DesiredState;
let stateDir: string;
const siteOf = (env: NodeJS.ProcessEnv) =>
  new AzureSite(desired.sites.find((s) => s.metadata.name === 'azure-dr')!, { desired: () => desired, stateDir, env });

beforeAll(async () => {
  az = await startAzurite();
  await az.container('site-tests').create();
  const loaded = loadDesiredStateFromSources([{ file: 'azure.yaml', text: YAML }]);
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.diagnostics));
  desired = loaded.state;
  stateDir = mkdtempSync(join(tmpdir(), 'drsite-azure-site-'));
});
afterAll(async () => {
  await az?.cleanup();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('AzureSite', () => {
  it('without the credential variable, the site is unreachable and says which variable is missing', async () => {
    const snap = await siteOf({}).snapshot();
    expect(snap.reachable).toBe(false);
    if (!snap.reachable) expect(snap.error).toContain('DRSITE_SITE_TEST_AZURE');
  });

  it('with a wrong account key, the site is unreachable with an authentication error, not a crash', async () => {
    const wrong = az.connectionString.replace(/AccountKey=[^;]+/, `AccountKey=${Buffer.alloc(64, 7).toString('base64')}`);
    const snap = await siteOf({ DRSITE_SITE_TEST_AZURE: wrong }).snapshot();
    expect(snap.reachable).toBe(false);
    if (!snap.reachable) expect(snap.error).toMatch(/rejected the credential/);
  });

  it('reports replicas from the container and refuses what only a host agent can do', async () => {
    const link = new AzureBlobLink({ container: az.container('site-tests'), primary: 'site-a' });
    await link.createReplica(createRequest('rel-web-01', 'web-01', [{ id: 'os', size: 1 << 20 }], newKeys()));
    const site = siteOf({ DRSITE_SITE_TEST_AZURE: az.connectionString });
    const snap = await site.snapshot();
    expect(snap.reachable).toBe(true);
    if (snap.reachable) {
      expect(snap.relationships.map((r) => [r.id, r.role, r.peer, r.state, r.recoveryPoints])).toEqual([['rel-web-01', 'Replica', 'site-a', 'ReadyForInitialReplication', 0]]);
      expect(snap.vms).toEqual([]);
    }
    const refused = await site.resync().catch((e: unknown) => e);
    expect(TerminalError.is(refused) && refused.code).toBe('invalid-argument');
    expect((refused as Error).message).toContain('azure-dr holds replicas only');
  });

  it('a test failover before the first complete copy is refused and writes nothing', async () => {
    const site = siteOf({ DRSITE_SITE_TEST_AZURE: az.connectionString });
    const e = await site.testFailover('rel-web-01', { recoveryPoint: 'latest', job: 'job-1' }).catch((x: unknown) => x);
    expect(TerminalError.is(e) && e.code).toBe('invalid-state');
    expect((e as Error).message).toContain('has no recovery point yet');
    expect(existsSync(join(stateDir, 'azure', 'job-1'))).toBe(false);
    expect(await site.vms()).toEqual([]);
  });
});

describe('a test failover in Azure', () => {
  it('keeps its recovery point past retention until cleanup (its Terraform imports those snapshots whenever it is applied)', async () => {
    const container = az.container('site-tests');
    const clock = new ManualClock(Date.UTC(2026, 0, 9, 9, 0));
    const vm = await TestVm.create('rel-db-01', { os: 1 << 20 });
    try {
      const link = new AzureBlobLink({ container, clock, primary: 'site-a' });
      await link.createReplica(createRequest(vm.id, 'db-01', [{ id: 'os', size: 1 << 20 }], vm.keys, 0));
      const rand = prng(3);
      await vm.scribble(20, rand, true);
      await vm.cycle(link, { full: true, time: clock.now() });
      // No NetworkMapping names a test network here: the Terraform cannot be written, nothing is recorded.
      const state = new AzureFailoverState(container);
      const withDb = { ...desired, protectedVms: [...desired.protectedVms, { ...desired.protectedVms[0], metadata: { name: 'db-01' }, spec: { ...desired.protectedVms[0].spec, vm: 'db-01' } }] };
      const site = new AzureSite(desired.sites.find((x) => x.metadata.name === 'azure-dr')!, { desired: () => withDb, stateDir, env: { DRSITE_SITE_TEST_AZURE: az.connectionString } });
      await expect(site.testFailover(vm.id, { recoveryPoint: 'latest', job: 'job-db' })).rejects.toThrow(/no test network for a test failover of "db-01"/);
      expect(await state.test(vm.id)).toBeUndefined();
      // Recorded directly from here on: the Terraform itself is covered by the end-to-end test.
      await state.setTest(vm.id, { vm: 'db-01-Test', sequence: 1, job: 'job-db', terraformDir: '/tmp/x', at: new Date(clock.now()).toISOString() });
      for (let i = 0; i < 3; i++) {
        await clock.advance(30_000);
        await vm.scribble(5, rand);
        await vm.cycle(link, { time: clock.now() });
      }
      expect((await link.diskPoints(vm.id, 'os')).map((p) => p.point.sequence)).toEqual([1, 4]);
      await state.clearTest(vm.id);
      await vm.scribble(5, rand);
      await vm.cycle(link, { time: clock.now() });
      expect((await link.diskPoints(vm.id, 'os')).map((p) => p.point.sequence)).toEqual([5]);
    } finally {
      await vm.close();
    }
  });
});

// Failover to Azure and back, declared in a recovery plan and run by the `drsite` CLI as separate
// processes against examples/azure: the host replicates into page blobs; a test failover and a
// planned failover write Terraform to .drsite/azure/<job>/ from the point's snapshots; failback
// downloads what changed in Azure, then the host replicates to Azure again. Azurite stands in for
// Azure Storage, which cannot be reached from here; nothing can run the Terraform here either
// (no provider download), so the tests read the JSON it would apply.
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { AzureBlobLink } from '../../src/azure/blob-link.ts';
import { diskBlobName } from '../../src/azure/disk-blobs.ts';
import { AzureFailoverState } from '../../src/azure/failover-state.ts';
import { loadDesiredState } from '../../src/config/index.ts';
import { openSites } from '../../src/sites/open-sites.ts';
import { Vault } from '../../src/vault/vault.ts';
import { ROOT, drsite } from '../cli/run-cli.ts';
import { startAzurite, type Azurite } from '../azure/azurite.ts';
import { prng } from '../core/helpers.ts';
import { planJob, vmStatus } from './helpers.ts';

const MiB = 1 << 20;
const DISKS = { os: 16 * MiB, data: 8 * MiB };
const ID = 'rel-web-01';

let az: Azurite;
let root: string;
let state: string;
const env = (): NodeJS.ProcessEnv => ({ DRSITE_AZURE_CONNECTION: az.connectionString });
const cli = (args: string[]) => drsite([...args, '--state-dir', state], { cwd: root, env: env(), timeoutMs: 120_000 });
const readVault = <T>(fn: (v: Vault) => T): T => {
  const v = Vault.open(join(state, 'vault.db'));
  try {
    return fn(v);
  } finally {
    v.close();
  }
};
const setFailover = (lines: string[]) => {
  const plan = readFileSync(join(ROOT, 'examples', 'azure', 'plan.yaml'), 'utf8');
  writeFileSync(join(root, 'az', 'plan.yaml'), `${plan.trimEnd()}\n  failover:\n${lines.map((l) => `    ${l}`).join('\n')}\n`);
};
const vmDisk = (disk: string) => join(state, 'sites', 'site-a', 'vms', 'web-01', `${disk}.img`);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const container = () => az.container('dr-replicas');

/** A disk's bytes in a page blob (or one of its snapshots): the VHD minus its 512-byte footer. */
async function blobDisk(disk: keyof typeof DISKS, snapshot?: string): Promise<Buffer> {
  const blob = container().getPageBlobClient(diskBlobName(ID, disk));
  return (snapshot ? blob.withSnapshot(snapshot) : blob).downloadToBuffer(0, DISKS[disk]);
}

/** Declares the failover and runs `drsite apply` on it (`samples: false`: without the sample workload). */
async function applyFailover(id: string, lines: string[], opts: { samples?: boolean } = {}) {
  setFailover([`id: ${id}`, ...lines]);
  const r = await cli(['apply', 'az', ...(opts.samples === false ? ['--no-samples'] : [])]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  const job = readVault((v) => planJob(v, id));
  expect(job?.state, JSON.stringify(job?.error) + r.stdout + r.stderr).toBe('Succeeded');
  const children = readVault((v) => job!.children.map((c) => v.getJob(c.id)!));
  return { job: job!, children, out: r.stdout };
}

function terraform(dir: string, stack: string) {
  return JSON.parse(readFileSync(join(dir, 'stacks', stack, 'cdk.tf.json'), 'utf8')) as {
    resource: Record<string, Record<string, Record<string, any>>>;
    data: Record<string, Record<string, Record<string, any>>>;
  };
}

beforeAll(async () => {
  az = await startAzurite();
  await container().create();
  root = mkdtempSync(join(tmpdir(), 'drsite-e2e-azure-'));
  cpSync(join(ROOT, 'examples', 'azure'), join(root, 'az'), { recursive: true });
  state = join(root, 'state');
  const r = await cli(['run', 'az', '--until', 'converged']);
  expect(r.code, r.stdout + r.stderr).toBe(0);
}, 150_000);
afterAll(async () => {
  await az?.cleanup();
  if (root) rmSync(root, { recursive: true, force: true });
});

test('the host replicates into Azure: the latest snapshot of each disk equals the primary disk at rest', async () => {
  const st = readVault(vmStatus);
  expect(st.map((s) => [s.name, s.state, s.direction])).toEqual([['web-01', 'Replicating', { primary: 'site-a', replica: 'azure-dr' }]]);
  const link = new AzureBlobLink({ container: container() });
  for (const disk of ['os', 'data'] as const) {
    const latest = (await link.diskPoints(ID, disk)).at(-1)!;
    expect(sha(await blobDisk(disk, latest.disk)), disk).toBe(sha(readFileSync(vmDisk(disk))));
  }
});

test('test failover writes Terraform for web-01-Test on the test network from the latest snapshots; cleanup ends it', async () => {
  const link = new AzureBlobLink({ container: container() });
  const latest = (await link.diskPoints(ID, 'os')).at(-1)!;
  const { children, out } = await applyFailover('drill-1', ['type: test']);
  expect(children.map((c) => [c.type, c.state])).toEqual([['TestFailover', 'Succeeded']]);
  const dir = join(state, 'azure', children[0].id);
  expect(out).toContain(`web-01-Test in Azure: terraform apply in ${join(dir, 'stacks', 'test-failover-web-01')}`);
  const step = children[0].steps.find((s) => s.name === 'test-failover')!;
  expect(step.output).toMatchObject({ vm: 'web-01-Test', terraformDir: dir, recoveryPoint: { sequence: latest.point.sequence } });

  const tf = terraform(dir, 'test-failover-web-01');
  const vm = Object.values(tf.resource.azurerm_virtual_machine);
  expect(vm.map((v) => v.name)).toEqual(['web-01-Test']);
  const disks = Object.values(tf.resource.azurerm_managed_disk);
  expect(disks.map((d) => [d.name, d.create_option]).sort()).toEqual([['web-01-Test-data', 'Import'], ['web-01-Test-os', 'Import']]);
  // The VM's first disk boots it.
  expect(vm[0].storage_os_disk.name).toBe('web-01-Test-os');
  for (const d of disks) {
    const disk = d.name.endsWith('-os') ? 'os' : 'data';
    const snap = (await link.diskPoints(ID, disk)).find((p) => p.point.sequence === latest.point.sequence)!;
    const url = new URL(d.source_uri as string);
    expect(url.searchParams.get('snapshot')).toBe(snap.disk);
    expect(url.pathname).toBe(`/devstoreaccount1/dr-replicas/${diskBlobName(ID, disk)}`);
  }
  // The test network, never the production one.
  expect(Object.values(tf.data.azurerm_subnet).map((s) => s.virtual_network_name)).toEqual(['lan-test']);
  expect(readVault(vmStatus)[0].testVms).toEqual(['web-01-Test']);
  // Replication goes on while the test runs: the primary still ships to the same blobs.
  expect(readVault(vmStatus)[0].state).toBe('Replicating');

  const clean = await applyFailover('drill-1-cleanup', ['type: test', 'cleanupTest: true']);
  expect(clean.children.map((c) => [c.type, c.state])).toEqual([['CleanupTestFailover', 'Succeeded']]);
  expect(readVault(vmStatus)[0].testVms).toEqual([]);
  expect(existsSync(dir)).toBe(true); // kept for `terraform destroy`
});

test('planned failover to Azure, then failback minimize-downtime: byte-identical, little downloaded, replicating to Azure again', async () => {
  const { children } = await applyFailover('to-azure-1', ['type: planned', 'commit: true']);
  // The VM is off at home now (the sample workload wrote to it until the shutdown).
  const before = { os: sha(readFileSync(vmDisk('os'))), data: sha(readFileSync(vmDisk('data'))) };
  expect(children.map((c) => [c.type, c.state])).toEqual([['PlannedFailover', 'Succeeded'], ['CommitFailover', 'Succeeded']]);
  expect(children[0].steps.map((s) => s.name)).toEqual(['power-off', 'prepare-planned-failover', 'failover']);
  const st = readVault(vmStatus)[0];
  expect([st.state, st.direction]).toEqual(['FailedOver', { primary: 'azure-dr', replica: 'site-a' }]);

  // The Terraform starts web-01 on the mapped network with its failover address.
  const tf = terraform(join(state, 'azure', children[0].id), 'failover-web-01');
  expect(Object.values(tf.resource.azurerm_virtual_machine).map((v) => v.name)).toEqual(['web-01']);
  expect(Object.values(tf.data.azurerm_subnet).map((s) => s.virtual_network_name)).toEqual(['lan-dr']);
  const nic = Object.values(tf.resource.azurerm_network_interface)[0];
  expect(nic.ip_configuration[0]).toMatchObject({ private_ip_address: '10.30.0.11', private_ip_address_allocation: 'Static' });
  // Planned: nothing was lost, the point the VM starts from is the primary as it was shut down.
  const link = new AzureBlobLink({ container: container(), keys: () => readKeys() });
  const point = (await link.diskPoints(ID, 'os')).at(-1)!;
  expect(sha(await blobDisk('os', point.disk))).toBe(before.os);
  expect(await new AzureFailoverState(container()).failover(ID)).toMatchObject({ kind: 'planned', state: 'FailedOver', vm: 'web-01', sequence: point.point.sequence });

  // While failed over, the blobs belong to the Azure side: the link refuses to change them.
  await expect(link.apply(ID)).rejects.toThrow(/has failed over to Azure/);

  // The Azure VM runs and writes 1% of the os disk's 4 KiB pages (Azure cannot run here: the writes
  // go through the same page-blob path, digests kept, that a VM's writes reach in this model).
  const blobs = link.diskBlobs(ID, 'os');
  const rand = prng(5);
  const blocks = DISKS.os / 4096;
  for (let i = 0; i < blocks / 100; i++) await blobs.writeLive(Math.floor(rand() * blocks) * 4096, 4096, randomBytes(4096));
  const inAzure = { os: sha(await blobDisk('os')), data: sha(await blobDisk('data')) };
  expect(inAzure.os).not.toBe(before.os);

  // Without the sample workload: it would write to the VM from the moment the failback powers it
  // on at home until the command exits, and the disks are compared with Azure's below.
  const fb = await applyFailover('failback-1', ['type: failback'], { samples: false });
  expect(await new AzureFailoverState(container()).failover(ID)).toBeUndefined();
  expect(fb.children.map((c) => [c.type, c.state])).toEqual([['PlannedFailover', 'Succeeded']]);
  expect(fb.children[0].steps.map((s) => s.name)).toEqual(['power-off', 'download-from-azure', 'end-azure-failover', 'replicate-to-azure', 'power-on']);
  const dl = fb.children[0].steps.find((s) => s.name === 'download-from-azure')!.output as { bytesDownloaded: number; diskBytes: number; method: string };
  expect(dl.method).toBe('minimize-downtime');
  expect(fb.out).toMatch(/downloaded [\d.]+ KiB of 24\.0 MiB from Azure \(minimize-downtime\)/);
  expect(dl.bytesDownloaded).toBeGreaterThan(0);
  expect(dl.bytesDownloaded / dl.diskBytes).toBeLessThan(0.03);
  // Home has exactly what the Azure VM left.
  expect({ os: sha(readFileSync(vmDisk('os'))), data: sha(readFileSync(vmDisk('data'))) }).toEqual(inAzure);
  const back = readVault(vmStatus)[0];
  expect([back.state, back.direction]).toEqual(['Replicating', { primary: 'site-a', replica: 'azure-dr' }]);
  // Replicating to Azure again: a new point after the failback equals the home disks.
  const after = (await link.diskPoints(ID, 'os')).at(-1)!;
  expect(after.point.sequence).toBeGreaterThan(point.point.sequence);
  expect(sha(await blobDisk('os', after.disk))).toBe(inAzure.os);
});

function readKeys() {
  const k = JSON.parse(readFileSync(join(state, 'sites', 'site-a', 'relationships', ID, 'keys.json'), 'utf8')) as { encryptionKey: string; macKey: string };
  return { encryptionKey: Buffer.from(k.encryptionKey, 'base64'), macKey: Buffer.from(k.macKey, 'base64') };
}

test('unplanned failover to Azure: the primary that comes back is refused (Critical, no retry); failback full-download restores it', async () => {
  const { children } = await applyFailover('to-azure-2', ['type: unplanned', 'recoveryPoint: latest', 'commit: true']);
  expect(children.map((c) => [c.type, c.state])).toEqual([['UnplannedFailover', 'Succeeded'], ['CommitFailover', 'Succeeded']]);
  expect(readVault(vmStatus)[0].state).toBe('FailedOver');
  expect(await new AzureFailoverState(container()).failover(ID)).toMatchObject({ kind: 'unplanned', state: 'FailedOver' });

  // The lost primary comes back and tries to ship: its link refuses, terminally.
  process.env.DRSITE_AZURE_CONNECTION = az.connectionString;
  const loaded = await loadDesiredState([join(root, 'az')]);
  if (!loaded.ok) throw new Error('examples/azure does not load');
  const sites = await openSites(loaded.state, { stateDir: state, cwd: root, schedule: false });
  try {
    const home = sites.get('site-a');
    await expect(home.replicateNow(ID)).rejects.toThrow(/has failed over to Azure/);
    const view = (await home.relationships()).find((v) => v.id === ID)!;
    expect([view.state, view.lastError?.code, view.nextRetryAt]).toEqual(['Critical', 'invalid-state', undefined]);
  } finally {
    await sites.close();
    delete process.env.DRSITE_AZURE_CONNECTION;
  }
  const inAzure = { os: sha(await blobDisk('os')), data: sha(await blobDisk('data')) };

  const fb = await applyFailover('failback-2', ['type: failback', 'failbackMethod: full-download'], { samples: false });
  const dl = fb.children[0].steps.find((s) => s.name === 'download-from-azure')!.output as { method: string; disks: { id: string; blocksChanged: number; compare: string }[] };
  // Everything written comes down, nothing compared (unwritten pages are zeros either way).
  expect(dl.method).toBe('full-download');
  expect(dl.disks.map((d) => [d.id, d.compare, d.blocksChanged])).toEqual([['os', 'none', DISKS.os / 4096], ['data', 'none', DISKS.data / 4096]]);
  expect({ os: sha(readFileSync(vmDisk('os'))), data: sha(readFileSync(vmDisk('data'))) }).toEqual(inAzure);
  const back = readVault(vmStatus)[0];
  expect([back.state, back.health, back.direction]).toEqual(['Replicating', 'Normal', { primary: 'site-a', replica: 'azure-dr' }]);
});

// Failover to Azure as Terraform. The recovery point is a real blob snapshot in Azurite (the
// Azure Blob emulator): the synthesised source_uri must be exactly the snapshot's URL and must
// serve the snapshot's bytes, not the base blob's newer ones.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { BlobServiceClient, type ContainerClient } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  desiredStateOf, NetworkMapping, ProtectedVm, ReplicationPolicy, Site, synthAzureFailover,
} from '../../constructs/index.ts';
import type { DesiredState } from '../../src/model/desired.ts';
import { quickstart } from '../../examples/cdk/quickstart.ts';
import { byName, drApp, readTerraform, ref, tempDirs, validationError } from './helpers.ts';

const tmp = tempDirs();
// Azurite's documented development account (a public, well-known key, not a secret).
const DEV_ACCOUNT = 'devstoreaccount1';
const DEV_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

let azurite: ChildProcess | undefined;
let container: ContainerClient;

async function startAzurite(): Promise<string> {
  const main = join(import.meta.dirname, '..', '..', 'node_modules', 'azurite', 'dist', 'src', 'blob', 'main.js');
  // In memory (no --location allowed then); cwd is a temp dir in case it writes anything anyway.
  const child = spawn(process.execPath, [main, '--inMemoryPersistence', '--blobPort', '0', '--disableTelemetry', '--skipApiVersionCheck'], {
    cwd: await tmp.make(), stdio: ['ignore', 'pipe', 'pipe'],
  });
  azurite = child;
  let out = '';
  // Keep draining both pipes for the emulator's whole life: a closed pipe would kill it (EPIPE).
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  return new Promise((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      const m = /listens on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', () => reject(new Error(`azurite exited before listening: ${out}`)));
  });
}

beforeAll(async () => {
  const endpoint = await startAzurite();
  const service = BlobServiceClient.fromConnectionString(
    `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_KEY};BlobEndpoint=${endpoint}/${DEV_ACCOUNT};`);
  container = service.getContainerClient('replicas');
  // Anonymous reads, so the test can fetch source_uri as Azure's import would.
  await container.create({ access: 'blob' });
});

afterAll(async () => {
  if (azurite && azurite.exitCode === null) {
    azurite.kill('SIGTERM');
    await once(azurite, 'exit');
  }
  await tmp.cleanup();
});

/** A page blob whose snapshot (the recovery point) holds `before`, while the base holds `after`. */
async function recoveryPointBlob(name: string, before: number, after: number) {
  const blob = container.getPageBlobClient(name);
  await blob.create(1024);
  await blob.uploadPages(Buffer.alloc(1024, before), 0, 1024);
  const { snapshot } = await blob.createSnapshot();
  await blob.uploadPages(Buffer.alloc(1024, after), 0, 1024);
  return { blobUrl: blob.url, snapshotTime: snapshot!, snapshotUrl: blob.withSnapshot(snapshot!).url };
}

function azureDesired(opts: { testNetwork?: string } = { testNetwork: 'lan-test' }): DesiredState {
  const dr = drApp();
  const a = new Site(dr, 'site-a', { type: 'host' });
  const cloud = new Site(dr, 'azure-dr', {
    type: 'azure', storageAccount: 'drsitereplicas', container: 'replicas', credentials: { connectionStringEnv: 'AZURE_STORAGE_CONNECTION_STRING' },
    resourceGroup: 'dr-rg', location: 'westeurope', network: { virtualNetwork: 'dr-vnet', subnet: 'servers' },
  });
  const policy = new ReplicationPolicy(dr, 'every-5m');
  new NetworkMapping(dr, 'lan-to-azure', { source: { site: a, network: 'lan' }, target: { site: cloud, network: 'lan-dr' }, testNetwork: opts.testNetwork });
  new ProtectedVm(dr, 'web-01', {
    primary: a, replica: cloud, policy, disks: { exclude: ['scratch'] },
    failoverNetwork: {
      adapters: [
        { name: 'eth0', ipv4: { address: '10.20.0.11/24', gateway: '10.20.0.1', dns: ['10.20.0.2'] } },
        { name: 'eth1', ipv4: { address: '10.30.0.11/24' }, ipv6: { address: 'fd00::11/64' } },
      ],
    },
  });
  return desiredStateOf(dr);
}


describe('test failover to Azure', () => {
  it('imports each disk from its blob snapshot, puts static NICs on the test network, and names the VM <vm>-Test', async () => {
    const system = await recoveryPointBlob('web-01/system.vhd', 0xa1, 0xb2);
    const data = await recoveryPointBlob('web-01/data.vhd', 0xc3, 0xd4);
    const outdir = await tmp.make();
    const file = synthAzureFailover({
      desired: azureDesired(), vm: 'web-01', test: true, outdir,
      recoveryPoint: { disks: [{ name: 'system', blobUrl: system.blobUrl, snapshotTime: system.snapshotTime }, { name: 'data', snapshotUrl: data.snapshotUrl, sizeGb: 8 }] },
    });
    expect(file).toBe(join(outdir, 'stacks', 'test-failover-web-01', 'cdk.tf.json'));
    const tf = readTerraform(file);
    const account = Object.entries(tf.data!.azurerm_storage_account);
    expect(account.map(([, a]) => [a.name, a.resource_group_name])).toEqual([['drsitereplicas', 'dr-rg']]);

    const osDisk = byName(tf, 'azurerm_managed_disk', 'web-01-Test-system');
    expect(osDisk.attrs).toMatchObject({
      create_option: 'Import', source_uri: system.snapshotUrl, storage_account_id: `\${data.azurerm_storage_account.${account[0][0]}.id}`,
      os_type: 'Linux', location: 'westeurope', resource_group_name: 'dr-rg',
    });
    const dataDisk = byName(tf, 'azurerm_managed_disk', 'web-01-Test-data');
    expect(dataDisk.attrs).toMatchObject({ create_option: 'Import', source_uri: data.snapshotUrl, disk_size_gb: 8 });
    expect(dataDisk.attrs.os_type).toBeUndefined();

    // The URLs serve the recovery point's bytes, not the base blob's newer ones.
    for (const [uri, expected] of [[osDisk.attrs.source_uri, 0xa1], [dataDisk.attrs.source_uri, 0xc3]] as const) {
      const res = await fetch(uri);
      expect(res.status).toBe(200);
      expect(new Set(new Uint8Array(await res.arrayBuffer()))).toEqual(new Set([expected]));
    }

    const subnet = Object.entries(tf.data!.azurerm_subnet);
    expect(subnet.map(([, s]) => [s.name, s.virtual_network_name, s.resource_group_name])).toEqual([['servers', 'lan-test', 'dr-rg']]);
    const subnetId = `\${data.azurerm_subnet.${subnet[0][0]}.id}`;
    const eth0 = byName(tf, 'azurerm_network_interface', 'web-01-Test-eth0');
    expect(eth0.attrs.ip_configuration).toEqual([
      { name: 'ipv4', primary: true, subnet_id: subnetId, private_ip_address_version: 'IPv4', private_ip_address_allocation: 'Static', private_ip_address: '10.20.0.11' },
    ]);
    expect(eth0.attrs.dns_servers).toEqual(['10.20.0.2']);
    const eth1 = byName(tf, 'azurerm_network_interface', 'web-01-Test-eth1');
    expect(eth1.attrs.ip_configuration).toEqual([
      expect.objectContaining({ private_ip_address_allocation: 'Static', private_ip_address: '10.30.0.11', primary: true }),
      expect.objectContaining({ private_ip_address_version: 'IPv6', private_ip_address_allocation: 'Static', private_ip_address: 'fd00::11' }),
    ]);

    const vm = byName(tf, 'azurerm_virtual_machine', 'web-01-Test').attrs;
    expect(vm.network_interface_ids).toEqual([ref('azurerm_network_interface', eth0.id), ref('azurerm_network_interface', eth1.id)]);
    expect(vm.primary_network_interface_id).toBe(ref('azurerm_network_interface', eth0.id));
    expect(vm.storage_os_disk).toMatchObject({ create_option: 'Attach', managed_disk_id: ref('azurerm_managed_disk', osDisk.id), os_type: 'Linux', name: 'web-01-Test-system' });
    expect(vm.storage_data_disk).toEqual([expect.objectContaining({ create_option: 'Attach', lun: 0, managed_disk_id: ref('azurerm_managed_disk', dataDisk.id) })]);
    expect(vm.tags).toMatchObject({ 'drsite-failover': 'test', 'drsite-recovery-point': system.snapshotTime });
    expect(tf.resource.azurerm_linux_virtual_machine).toBeUndefined();
    expect(tf.terraform.backend?.local?.path).toBe('terraform.tfstate');
  });
});

describe('failover to Azure', () => {
  it('names the VM <vm> and puts it on the mapped production network', async () => {
    const system = await recoveryPointBlob('web-01/os-2.vhd', 1, 2);
    const tf = readTerraform(synthAzureFailover({
      desired: azureDesired(), vm: 'web-01', test: false, outdir: await tmp.make(), recoveryPoint: { snapshotUrl: system.snapshotUrl },
    }));
    expect(Object.keys(tf.resource.azurerm_virtual_machine)).toHaveLength(1);
    expect(byName(tf, 'azurerm_virtual_machine', 'web-01').attrs.storage_data_disk).toBeUndefined();
    expect(byName(tf, 'azurerm_managed_disk', 'web-01-os').attrs.source_uri).toBe(system.snapshotUrl);
    expect(Object.values(tf.data!.azurerm_subnet)[0]).toMatchObject({ virtual_network_name: 'lan-dr' });
  });

  it('rejects what cannot fail over to Azure, naming where the VM was declared', async () => {
    const outdir = await tmp.make();
    const snapshotUrl = 'https://drsitereplicas.blob.core.windows.net/replicas/web-01/os.vhd?snapshot=2026-01-01T00%3A00%3A00.0000000Z';
    // The quickstart replicates to a host site.
    const qs = drApp();
    quickstart(qs);
    expect(validationError(() => synthAzureFailover({ desired: desiredStateOf(qs), vm: 'web-01', test: false, outdir, recoveryPoint: { snapshotUrl } })).message)
      .toMatch(/^DrApp\/web-01: ProtectedVM "web-01" does not replicate to an azure site \(at spec\.replica\)/);
    // A test failover needs an isolated network.
    expect(validationError(() => synthAzureFailover({ desired: azureDesired({}), vm: 'web-01', test: true, outdir, recoveryPoint: { snapshotUrl } })).message)
      .toMatch(/^DrApp\/web-01: no test network for a test failover of "web-01" to "azure-dr".*testNetwork on NetworkMapping "lan-to-azure"/);
    // A base blob is not a recovery point; an excluded disk has no replica; unknown VM.
    const e = validationError(() => synthAzureFailover({
      desired: azureDesired(), vm: 'web-01', test: true, outdir,
      recoveryPoint: { disks: [{ name: 'system', snapshotUrl: 'https://drsitereplicas.blob.core.windows.net/replicas/os.vhd' }, { name: 'scratch', snapshotUrl }] },
    }));
    expect(e.message).toContain('disk "system": snapshot URL without ?snapshot=');
    expect(e.message).toContain('disk "scratch" is excluded from replication (at spec.disks.exclude)');
    expect(validationError(() => synthAzureFailover({ desired: azureDesired(), vm: 'nope', test: true, outdir, recoveryPoint: { snapshotUrl } })).message)
      .toMatch(/^test-failover-nope: ProtectedVM "nope" is not declared: declared: web-01/);
  });
});

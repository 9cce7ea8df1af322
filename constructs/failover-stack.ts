// Failover to Azure as Terraform: one managed disk per replicated disk imported from its blob
// snapshot (the recovery point), one NIC per adapter with the failover static addresses on the
// mapped network, and a VM that attaches the imported OS disk. The engine synthesises this per
// failover job into .drsite/azure/<job>/ and runs terraform there.
import { join } from 'node:path';
import { App, LocalBackend, TerraformStack } from 'cdktf';
import type { Construct } from 'constructs';
import { DataAzurermStorageAccount } from '@cdktf/provider-azurerm/lib/data-azurerm-storage-account/index.js';
import { DataAzurermSubnet } from '@cdktf/provider-azurerm/lib/data-azurerm-subnet/index.js';
import { ManagedDisk } from '@cdktf/provider-azurerm/lib/managed-disk/index.js';
import { NetworkInterface, type NetworkInterfaceIpConfiguration } from '@cdktf/provider-azurerm/lib/network-interface/index.js';
import { AzurermProvider } from '@cdktf/provider-azurerm/lib/provider/index.js';
// azurerm_linux_virtual_machine cannot attach an existing OS disk; azurerm_virtual_machine can.
import { VirtualMachine } from '@cdktf/provider-azurerm/lib/virtual-machine/index.js';
import type { Diagnostic } from '../src/model/diagnostics.ts';
import type { DesiredState, FailoverAdapter, ProtectedVM, Site } from '../src/model/desired.ts';
import { declaredAt } from './asr-rules.ts';
import { ConstructValidationError, constructDiagnostic } from './errors.ts';

/** One replicated disk at the chosen recovery point. */
export interface AzureFailoverDisk {
  /** The disk's name on the VM (e.g. 'system', 'data'). */
  readonly name: string;
  /**
   * The blob snapshot URL (`<blob url>?snapshot=<time>`).
   * @default built from blobUrl and snapshotTime
   */
  readonly snapshotUrl?: string;
  /**
   * The page blob's URL, with snapshotTime (instead of snapshotUrl).
   * @default none
   */
  readonly blobUrl?: string;
  /**
   * The snapshot's time as Azure names it, with blobUrl.
   * @default none
   */
  readonly snapshotTime?: string;
  /**
   * The OS disk the VM boots from.
   * @default true for the first disk when no disk is marked
   */
  readonly os?: boolean;
  /**
   * Size in GiB.
   * @default the imported VHD's size
   */
  readonly sizeGb?: number;
}

/** The recovery point: its disks, or a single OS disk given by the top-level URL fields. */
export interface AzureRecoveryPoint {
  /**
   * Every replicated disk at the recovery point.
   * @default one OS disk named 'os' from snapshotUrl, or blobUrl and snapshotTime
   */
  readonly disks?: readonly AzureFailoverDisk[];
  /** @default none (see disks) */
  readonly snapshotUrl?: string;
  /** @default none (see disks) */
  readonly blobUrl?: string;
  /** @default none (see disks) */
  readonly snapshotTime?: string;
  /**
   * The recovery point's time, recorded as a tag.
   * @default snapshotTime, or the OS disk's snapshotTime, when given
   */
  readonly time?: string;
}

export interface AzureFailoverOptions {
  /** The validated desired state. */
  readonly desired: DesiredState;
  /** The ProtectedVM's metadata.name. */
  readonly vm: string;
  /** Which blob snapshots to start from. */
  readonly recoveryPoint: AzureRecoveryPoint;
  /** A test failover: VM `<vm>-Test` on the mapping's testNetwork. */
  readonly test: boolean;
  /** Where cdk.tf.json is written (`<outdir>/stacks/<stack>/cdk.tf.json`). */
  readonly outdir: string;
  /**
   * Azure VM size.
   * @default 'Standard_B2s'
   */
  readonly vmSize?: string;
  /**
   * The OS disk's operating system.
   * @default 'Linux'
   */
  readonly osType?: 'Linux' | 'Windows';
  /**
   * Managed disk type.
   * @default 'Standard_LRS'
   */
  readonly storageAccountType?: 'Standard_LRS' | 'StandardSSD_LRS' | 'Premium_LRS';
  /**
   * Hyper-V generation of the imported OS disk.
   * @default 'V1'
   */
  readonly hyperVGeneration?: 'V1' | 'V2';
  /**
   * The stack's name.
   * @default 'failover-<vm>' or 'test-failover-<vm>'
   */
  readonly stackName?: string;
}

interface Plan {
  protectedVm: ProtectedVM;
  site: Site & { spec: { resourceGroup: string; location: string; storageAccount: string } };
  network: string;
  subnet: string;
  disks: { name: string; sourceUri: string; os: boolean; sizeGb?: number; snapshotTime?: string }[];
}

export class AzureFailoverStack extends TerraformStack {
  /** The failed-over VM's name: `<vm>` or `<vm>-Test`. */
  readonly vmName: string;

  constructor(scope: Construct, id: string, opts: Omit<AzureFailoverOptions, 'outdir' | 'stackName'>) {
    super(scope, id);
    const plan = planFailover(this.node.path, opts);
    const { site, protectedVm } = plan;
    const { resourceGroup, location } = site.spec;
    const target = opts.test ? `${protectedVm.spec.vm}-Test` : protectedVm.spec.vm;
    this.vmName = target;
    const rp = opts.recoveryPoint;
    const pointTime = rp.time ?? rp.snapshotTime ?? plan.disks.find((d) => d.os)?.snapshotTime;
    const tags = {
      'drsite-protected-vm': protectedVm.metadata.name,
      'drsite-failover': opts.test ? 'test' : 'failover',
      ...(pointTime !== undefined ? { 'drsite-recovery-point': pointTime } : {}),
    };

    // Terraform state lives beside cdk.tf.json: one state per failover job directory.
    new LocalBackend(this, { path: 'terraform.tfstate' });
    new AzurermProvider(this, 'azurerm', { features: [{}] });
    const account = new DataAzurermStorageAccount(this, 'replica-storage', { name: site.spec.storageAccount, resourceGroupName: resourceGroup });
    const subnet = new DataAzurermSubnet(this, 'subnet', { name: plan.subnet, virtualNetworkName: plan.network, resourceGroupName: resourceGroup });

    const disks = plan.disks.map((d) => ({
      d,
      name: `${target}-${d.name}`,
      disk: new ManagedDisk(this, `disk-${d.name}`, {
        name: `${target}-${d.name}`,
        location, resourceGroupName: resourceGroup,
        storageAccountType: opts.storageAccountType ?? 'Standard_LRS',
        createOption: 'Import',
        sourceUri: d.sourceUri,
        storageAccountId: account.id,
        ...(d.sizeGb !== undefined ? { diskSizeGb: d.sizeGb } : {}),
        ...(d.os ? { osType: opts.osType ?? 'Linux', hyperVGeneration: opts.hyperVGeneration ?? 'V1' } : {}),
        tags,
      }),
    }));

    const adapters: FailoverAdapter[] = protectedVm.spec.failoverNetwork?.adapters ?? [{ name: 'nic0' }];
    const nics = adapters.map((a) => new NetworkInterface(this, `nic-${a.name}`, {
      name: `${target}-${a.name}`,
      location, resourceGroupName: resourceGroup,
      ipConfiguration: ipConfigurations(a, subnet.id),
      ...(dnsOf(a).length > 0 ? { dnsServers: dnsOf(a) } : {}),
      tags,
    }));

    const os = disks.find((x) => x.d.os)!;
    const data = disks.filter((x) => !x.d.os);
    new VirtualMachine(this, 'vm', {
      name: target,
      location, resourceGroupName: resourceGroup,
      vmSize: opts.vmSize ?? 'Standard_B2s',
      networkInterfaceIds: nics.map((n) => n.id),
      ...(nics.length > 1 ? { primaryNetworkInterfaceId: nics[0].id } : {}),
      storageOsDisk: { name: os.name, createOption: 'Attach', managedDiskId: os.disk.id, osType: opts.osType ?? 'Linux', caching: 'ReadWrite' },
      ...(data.length > 0 ? {
        storageDataDisk: data.map((x, lun) => ({ name: x.name, createOption: 'Attach', managedDiskId: x.disk.id, lun, ...(x.d.sizeGb !== undefined ? { diskSizeGb: x.d.sizeGb } : {}) })),
      } : {}),
      tags,
    });
  }
}

/** Static IPv4 first (Azure's primary configuration must be IPv4), then static IPv6. */
function ipConfigurations(a: FailoverAdapter, subnetId: string): NetworkInterfaceIpConfiguration[] {
  const bare = (address: string) => address.split('/')[0];
  const configs: NetworkInterfaceIpConfiguration[] = [
    a.ipv4
      ? { name: 'ipv4', primary: true, subnetId, privateIpAddressVersion: 'IPv4', privateIpAddressAllocation: 'Static', privateIpAddress: bare(a.ipv4.address) }
      : { name: 'ipv4', primary: true, subnetId, privateIpAddressVersion: 'IPv4', privateIpAddressAllocation: 'Dynamic' },
  ];
  if (a.ipv6) configs.push({ name: 'ipv6', subnetId, privateIpAddressVersion: 'IPv6', privateIpAddressAllocation: 'Static', privateIpAddress: bare(a.ipv6.address) });
  return configs;
}

const dnsOf = (a: FailoverAdapter): string[] => [...(a.ipv4?.dns ?? []), ...(a.ipv6?.dns ?? [])];

/** Resolves the VM, site, network and disks, or throws every problem at once. */
function planFailover(stackPath: string, opts: Omit<AzureFailoverOptions, 'outdir' | 'stackName'>): Plan {
  const { desired } = opts;
  const errors: Diagnostic[] = [];
  const fail = (): never => {
    throw new ConstructValidationError(errors);
  };
  const protectedVm = desired.protectedVms.find((v) => v.metadata.name === opts.vm);
  if (!protectedVm) {
    errors.push(constructDiagnostic(stackPath, `ProtectedVM "${opts.vm}" is not declared`,
      `declared: ${desired.protectedVms.map((v) => v.metadata.name).join(', ') || '(none)'}`));
    return fail();
  }
  const at = (path: string, summary: string, detail: string) =>
    errors.push({ severity: 'error', summary, detail, path, ...declaredAt(desired, 'ProtectedVM', protectedVm.metadata.name) });
  const site = desired.sites.find((s) => s.metadata.name === protectedVm.spec.replica);
  if (!site || site.spec.type !== 'azure') {
    at('spec.replica', `ProtectedVM "${opts.vm}" does not replicate to an azure site`, `its replica site "${protectedVm.spec.replica}" must be a Site with type: azure to fail over to Azure`);
    return fail();
  }

  const mapping = desired.networkMappings.find((m) => m.spec.source.site === protectedVm.spec.primary && m.spec.target.site === site.metadata.name);
  const network = opts.test ? mapping?.spec.testNetwork : (mapping?.spec.target.network ?? site.spec.network?.virtualNetwork);
  if (network === undefined) {
    if (opts.test) {
      at('spec.replica', `no test network for a test failover of "${opts.vm}" to "${site.metadata.name}"`,
        `an Azure VM needs a network: set testNetwork on ${mapping ? `NetworkMapping "${mapping.metadata.name}"` : `a NetworkMapping from "${protectedVm.spec.primary}" to "${site.metadata.name}"`} (an isolated virtual network)`);
    } else {
      at('spec.replica', `no network for a failover of "${opts.vm}" to "${site.metadata.name}"`,
        `declare a NetworkMapping from "${protectedVm.spec.primary}" to "${site.metadata.name}", or spec.network on Site "${site.metadata.name}"`);
    }
  }

  const rp = opts.recoveryPoint;
  const given: AzureFailoverDisk[] = rp.disks ? [...rp.disks] : [{ name: 'os', snapshotUrl: rp.snapshotUrl, blobUrl: rp.blobUrl, snapshotTime: rp.snapshotTime, os: true }];
  if (given.length === 0) at('', 'the recovery point has no disks', 'give at least the OS disk with its snapshot URL');
  const excluded = new Set(protectedVm.spec.disks?.exclude ?? []);
  const osIndex = Math.max(0, given.findIndex((d) => d.os === true));
  if (given.filter((d) => d.os === true).length > 1) at('', 'more than one OS disk', 'mark exactly one disk with os: true');
  const names = new Set<string>();
  const disks = given.map((d, i) => {
    if (names.has(d.name)) at('', `disk "${d.name}" is given twice`, 'each disk of the recovery point appears once');
    names.add(d.name);
    if (excluded.has(d.name)) at('spec.disks.exclude', `disk "${d.name}" is excluded from replication`, 'an excluded disk has no replica to fail over from');
    if (!/^[A-Za-z0-9][-A-Za-z0-9_.]{0,60}$/.test(d.name)) at('', `disk name "${d.name}" is not valid in Azure`, 'use letters, digits, -, _ and .');
    return { name: d.name, sourceUri: snapshotUri(d, at), os: i === osIndex, sizeGb: d.sizeGb, snapshotTime: d.snapshotTime };
  });
  if (errors.length > 0) return fail();
  const s = site as Plan['site'];
  return { protectedVm, site: s, network: network!, subnet: site.spec.network?.subnet ?? 'default', disks };
}

/** `<blob>?snapshot=<time>`: exactly one of snapshotUrl or blobUrl with snapshotTime. */
function snapshotUri(d: AzureFailoverDisk, at: (path: string, summary: string, detail: string) => void): string {
  const both = 'give snapshotUrl, or blobUrl with snapshotTime';
  if (d.snapshotUrl !== undefined && (d.blobUrl !== undefined || d.snapshotTime !== undefined)) {
    at('', `disk "${d.name}" has both a snapshot URL and a blob URL`, both);
    return '';
  }
  let url: URL;
  try {
    url = new URL(d.snapshotUrl ?? d.blobUrl ?? '');
  } catch {
    at('', `disk "${d.name}" has no valid snapshot URL`, both);
    return '';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') at('', `disk "${d.name}": ${url.protocol} URL`, 'blob URLs are https (or http for a local emulator)');
  if (d.snapshotUrl !== undefined) {
    if (!url.searchParams.has('snapshot')) at('', `disk "${d.name}": snapshot URL without ?snapshot=`, 'a recovery point is a blob snapshot; give the snapshot URL, not the base blob');
    return d.snapshotUrl;
  }
  if (d.snapshotTime === undefined) {
    at('', `disk "${d.name}" has a blob URL but no snapshot time`, both);
    return '';
  }
  url.searchParams.set('snapshot', d.snapshotTime);
  return url.toString();
}

/**
 * Synthesises the failover (or test failover) of one protected VM to Azure and returns the path
 * of cdk.tf.json. Throws ConstructValidationError on input that cannot fail over.
 */
export function synthAzureFailover(opts: AzureFailoverOptions): string {
  const stackName = opts.stackName ?? `${opts.test ? 'test-failover' : 'failover'}-${opts.vm}`;
  const { outdir: _o, stackName: _s, ...rest } = opts;
  // Checked before App exists (App creates its output directory at once); throws on bad input.
  planFailover(stackName, rest);
  const app = new App({ outdir: opts.outdir });
  new AzureFailoverStack(app, stackName, rest);
  app.synth();
  return join(opts.outdir, 'stacks', stackName, 'cdk.tf.json');
}

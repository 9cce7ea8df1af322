// An azure Site as the reconciler sees it: no agent runs there, so this adapter reads the container
// (replica records, recovery points as blob snapshots, failover markers) and serves the replica
// side of the failover verbs in-process. A failover to Azure cannot start a VM from here: it writes
// Terraform (managed disks imported from the point's snapshots, NICs with the failover addresses,
// the VM) into `<stateDir>/azure/<job>/` for the operator's `terraform apply`, and records the
// failover in the container so the primary's link stops changing those blobs.
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { ContainerClient } from '@azure/storage-blob';
import { AzureBlobLink } from '../azure/blob-link.ts';
import { azureContainerFromSite } from '../azure/credentials.ts';
import { diskBlobName, type PointMetadata } from '../azure/disk-blobs.ts';
import { azureCall } from '../azure/errors.ts';
import { AzureFailoverState, type AzureFailoverRecord, type AzureTestFailoverRecord } from '../azure/failover-state.ts';
import { selectPoint } from '../core/replica/point-selector.ts';
import { transition } from '../core/replication/replication-state.ts';
import { systemClock, type Clock } from '../model/clock.ts';
import type { DesiredState, Site as SiteResource } from '../model/desired.ts';
import { TerminalError } from '../model/errors.ts';
import { formatDiagnostic } from '../model/diagnostics.ts';
import type { SiteSpec } from '../model/types.generated.ts';
import type { FailoverRequest, RecoveryPointInfo, RecoveryPointSelector, RelationshipView, TestFailoverRequest } from '../transport/agent-api.ts';
import { loadConstructs } from '../model/terraform.ts';
import { notOnThisSite, type FailoverContext, type Site, type SiteSnapshot, type SiteVm } from './site.ts';

export interface AzureSiteOptions {
  /** The declarations the failover Terraform is made from (network mappings, failover addresses). */
  desired: () => DesiredState;
  /** drsite's state directory: failover Terraform goes to `<stateDir>/azure/<job>/`. */
  stateDir: string;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Time for views (lag), test-failover records and job names. @default systemClock */
  clock?: Clock;
}

/** What a failover verb brings to the Azure site: the point, the job id and (failover) planned or unplanned (@default unplanned). */
type FailoverBody = { recoveryPoint?: RecoveryPointSelector } & FailoverContext;

export interface AzureFailoverResult {
  vm: string;
  recoveryPoint: { sequence: number; time: string };
  state?: string;
  /** Where the Terraform went: run `terraform apply` there (and `terraform destroy` to remove it). */
  terraformDir: string;
  terraformFile: string;
}

interface Relationship {
  id: string;
  vm: string;
  primary: string;
  applied: number;
  disks: { id: string; size: number }[];
  points: PointMetadata[];
  failover?: AzureFailoverRecord;
  test?: AzureTestFailoverRecord;
}

export class AzureSite implements Site {
  readonly kind = 'azure';
  readonly name: string;
  readonly embedded = false;
  readonly endpoint = '';
  readonly azure: SiteSpec;
  readonly #resource: SiteResource;
  readonly #opts: AzureSiteOptions;
  #link: AzureBlobLink | undefined;
  #state: AzureFailoverState | undefined;

  #now(): number {
    return (this.#opts.clock ?? systemClock).now();
  }

  constructor(resource: SiteResource, opts: AzureSiteOptions) {
    if (resource.spec.type !== 'azure') throw new TerminalError('invalid-argument', `site ${resource.metadata.name} is not an azure site`);
    this.name = resource.metadata.name;
    this.azure = resource.spec;
    this.#resource = resource;
    this.#opts = opts;
  }

  /** The container's clients, made on first use: missing credentials make the site unreachable, not drsite unable to start. */
  #open(): { link: AzureBlobLink; state: AzureFailoverState; container: ContainerClient } {
    this.#link ??= new AzureBlobLink({ container: azureContainerFromSite(this.#resource, this.#opts.env ?? process.env, { maxTries: 2, retryDelayInMs: 200, tryTimeoutInMs: 15_000 }) });
    this.#state ??= new AzureFailoverState(this.#link.container);
    return { link: this.#link, state: this.#state, container: this.#link.container };
  }

  async snapshot(): Promise<SiteSnapshot> {
    try {
      const rels = await this.#relationships();
      const now = this.#now();
      return { name: this.name, reachable: true, vms: rels.flatMap((r) => this.#vms(r)), relationships: rels.map((r) => this.#view(r, now)) };
    } catch (e) {
      return { name: this.name, reachable: false, error: (e as Error).message };
    }
  }

  vms = async (): Promise<SiteVm[]> => (await this.#relationships()).flatMap((r) => this.#vms(r));
  relationships = async (): Promise<RelationshipView[]> => (await this.#relationships()).map((r) => this.#view(r, this.#now()));
  recoveryPoints = async (id: string): Promise<RecoveryPointInfo[]> =>
    (await this.#relationship(id)).points.map((p) => ({ sequence: p.sequence, time: new Date(p.cutTime).toISOString(), consistency: p.consistency, cutId: p.cutId }));

  // The replica side of the failover family, served here; the rest is the primary host's.
  testFailover = (id: string, req: TestFailoverRequest & FailoverContext): Promise<AzureFailoverResult> => this.#testFailover(id, req);
  cleanupTestFailover = (id: string) => this.#cleanupTest(id);
  failover = (id: string, req: FailoverRequest & FailoverContext): Promise<AzureFailoverResult> => this.#failover(id, req);
  commit = (id: string): Promise<RelationshipView> => this.#commit(id);
  cancel = (id: string) => this.#endFailover(id, 'cancel');
  endFailover = (id: string) => this.#endFailover(id, 'end-failover');

  #refuse(verb: string): never {
    return notOnThisSite(`an azure site`, verb, `${this.name} holds replicas only; the primary host's agent does the rest`);
  }
  pointDigest = async (): Promise<never> => this.#refuse('point-digest');
  createVm = async (): Promise<never> => this.#refuse('create-vm');
  setVmPower = async (): Promise<never> => this.#refuse('power');
  createRelationship = async (): Promise<never> => this.#refuse('create-relationship');
  removeRelationship = async (): Promise<never> => this.#refuse('remove-relationship');
  startReplication = async (): Promise<never> => this.#refuse('start-replication');
  replicateNow = async (): Promise<never> => this.#refuse('replicate-now');
  modifySettings = async (): Promise<never> => this.#refuse('settings');
  suspend = async (): Promise<never> => this.#refuse('suspend');
  resume = async (): Promise<never> => this.#refuse('resume');
  resync = async (): Promise<never> => this.#refuse('resync');
  moveStorage = async (): Promise<never> => this.#refuse('move-storage');
  extend = async (): Promise<never> => this.#refuse('extend');
  preparePlannedFailover = async (): Promise<never> => this.#refuse('prepare-planned-failover');
  reverse = async (): Promise<never> => this.#refuse('reverse');
  failbackFromAzure = async (): Promise<never> => this.#refuse('failback-from-azure');
  replicateToAzure = async (): Promise<never> => this.#refuse('replicate-to-azure');

  async close(): Promise<void> {}

  // ------------------------------------------------------------------------------------ reading

  async #relationships(): Promise<Relationship[]> {
    const { container } = this.#open();
    const ids: string[] = [];
    await azureCall(container.containerName, async () => {
      for await (const b of container.listBlobsFlat()) {
        const m = /^([^/]+)\/relationship\.json$/.exec(b.name);
        if (m) ids.push(m[1]);
      }
    });
    return Promise.all(ids.sort().map((id) => this.#relationship(id)));
  }

  async #relationship(id: string): Promise<Relationship> {
    const { link, state } = this.#open();
    const rec = await link.record(id);
    const points = rec.disks.length > 0 ? (await link.diskPoints(id, rec.disks[0].id)).map((p) => p.point) : [];
    const [failover, test] = await Promise.all([state.failover(id), state.test(id)]);
    return {
      id, vm: rec.vm, primary: rec.primary ?? '', applied: rec.applied, disks: rec.disks, points,
      ...(failover && { failover }), ...(test && { test }),
    };
  }

  #view(r: Relationship, now: number): RelationshipView {
    const latest = r.points.at(-1);
    const state = r.failover?.state ?? (r.applied >= 1 ? 'Replicating' : 'ReadyForInitialReplication');
    const lastReplicationTime = latest && new Date(latest.cutTime).toISOString();
    return {
      id: r.id,
      role: 'Replica',
      vm: r.vm,
      peer: r.primary,
      state,
      health: 'Normal',
      healthReasons: [],
      disks: r.disks,
      excludeDisks: [],
      ...(lastReplicationTime && { lastReplicationTime, lagSeconds: Math.max(0, Math.round((now - latest!.cutTime) / 1000)) }),
      pendingBytes: 0,
      recoveryPoints: r.points.length,
      appliedSequence: r.applied,
      storagePath: `${this.#containerUrl()}/${r.id}`,
      ...(r.test && { testFailover: { vm: r.test.vm, sequence: r.test.sequence } }),
      ...(r.failover && { failover: { vm: r.failover.vm, sequence: r.failover.sequence } }),
      statistics: {
        state, health: 'Normal', ...(lastReplicationTime && { lastReplicationTime }),
        pendingReplicationSize: 0, averageReplicationSize: 0, maximumReplicationSize: 0, averageReplicationLatency: 0,
        successfulReplicationCount: 0, missedReplicationCount: 0, replicationErrors: 0, monitoringStartTime: new Date(now).toISOString(),
      },
    };
  }

  /** VMs declared in Terraform by a failover or test failover: reported so the planner sees them. */
  #vms(r: Relationship): SiteVm[] {
    const vm = (name: string, sequence: number, kind: 'test' | 'failover'): SiteVm => ({
      name, disks: r.disks.map((d) => ({ name: d.id, size: d.size })), adapters: [], power: 'Running', origin: { relationshipId: r.id, recoveryPoint: sequence, kind },
    });
    return [...(r.test ? [vm(r.test.vm, r.test.sequence, 'test')] : []), ...(r.failover ? [vm(r.failover.vm, r.failover.sequence, 'failover')] : [])];
  }

  #containerUrl(): string {
    const u = new URL(this.#open().container.url);
    u.search = ''; // never a SAS token in status or Terraform
    return u.toString().replace(/\/$/, '');
  }

  // ---------------------------------------------------------------------------- failover verbs

  async #testFailover(id: string, b: FailoverBody): Promise<AzureFailoverResult> {
    const r = await this.#relationship(id);
    if (r.test) throw new TerminalError('invalid-state', `${r.vm} already has a test failover in Azure (${r.test.vm}, Terraform in ${r.test.terraformDir}): clean it up first`);
    const out = await this.#terraform(r, b, true);
    await this.#open().state.setTest(id, { vm: out.vm, sequence: out.recoveryPoint.sequence, job: b.job ?? '', terraformDir: out.terraformDir, at: new Date(this.#now()).toISOString() });
    return out;
  }

  async #cleanupTest(id: string): Promise<{ removed: string[]; terraformDir?: string }> {
    const r = await this.#relationship(id);
    if (!r.test) throw new TerminalError('invalid-state', `no test failover of ${r.vm} is active in Azure`);
    await this.#open().state.clearTest(id);
    // The Azure resources are Terraform's: `terraform destroy` in that directory removes them.
    return { removed: [r.test.vm], terraformDir: r.test.terraformDir };
  }

  async #failover(id: string, b: FailoverBody): Promise<AzureFailoverResult> {
    const r = await this.#relationship(id);
    if (r.failover?.state === 'FailedOver') throw new TerminalError('invalid-state', `${r.vm} has already failed over to Azure and been committed`);
    if (r.applied < 1) throw new TerminalError('invalid-state', `the Azure replica of ${r.vm} has no complete copy yet`);
    // The same call again before commit changes the point (new Terraform, new job directory).
    const out = await this.#terraform(r, b, false);
    const rec: AzureFailoverRecord = {
      kind: b.kind === 'planned' ? 'planned' : 'unplanned',
      // A first failover moves through the table; a change of point before commit stays where it is.
      state: r.failover ? r.failover.state : (transition('Replicating', 'failover') as AzureFailoverRecord['state']),
      vm: out.vm,
      sequence: out.recoveryPoint.sequence,
      job: b.job ?? '',
      terraformDir: out.terraformDir,
      at: new Date(this.#now()).toISOString(),
    };
    await this.#open().state.setFailover(id, rec);
    return { ...out, state: rec.state };
  }

  async #commit(id: string): Promise<RelationshipView> {
    const r = await this.#relationship(id);
    if (r.failover?.state !== 'FailoverWaitingCompletion') throw new TerminalError('invalid-state', `cannot commit ${r.vm}: no failover to Azure is waiting for completion`);
    r.failover = { ...r.failover, state: transition(r.failover.state, 'commit') as AzureFailoverRecord['state'] };
    await this.#open().state.setFailover(id, r.failover);
    return this.#view(r, this.#now());
  }

  /**
   * cancel: the failover before commit is abandoned; end-failover: failback has brought the VM
   * home. Either way the marker goes and the primary may change the blobs again; the Azure VM is
   * Terraform's to destroy.
   */
  async #endFailover(id: string, verb: 'cancel' | 'end-failover'): Promise<RelationshipView & { terraformDir?: string }> {
    const r = await this.#relationship(id);
    if (!r.failover) throw new TerminalError('invalid-state', `nothing to ${verb === 'cancel' ? 'cancel' : 'end'}: ${r.vm} has not failed over to Azure`);
    if (verb === 'cancel' && r.failover.state === 'FailedOver') throw new TerminalError('invalid-state', `the failover of ${r.vm} to Azure is committed: fail back instead of cancelling`);
    const dir = r.failover.terraformDir;
    await this.#open().state.clearFailover(id);
    delete r.failover;
    return { ...this.#view(r, this.#now()), terraformDir: dir };
  }

  /** Resolves the point and writes the failover Terraform for it into `<stateDir>/azure/<job>/`. */
  async #terraform(r: Relationship, b: FailoverBody, test: boolean): Promise<AzureFailoverResult> {
    const desired = this.#opts.desired();
    const pvm = desired.protectedVms.find((p) => p.spec.vm === r.vm && p.spec.replica === this.name);
    if (!pvm) throw new TerminalError('not-found', `no ProtectedVM declares VM ${r.vm} with replica site ${this.name}`);
    const point = selectPoint(r.points.map((p) => ({ ...p, time: p.cutTime })), b.recoveryPoint ?? 'latest', `the Azure replica of ${r.vm}`);
    const { link } = this.#open();
    const disks = [];
    for (const d of r.disks) {
      const snap = (await link.diskPoints(r.id, d.id)).find((p) => p.point.sequence === point.sequence);
      if (!snap) throw new TerminalError('not-found', `recovery point ${point.sequence} of ${r.vm} has no snapshot of disk ${d.id}`);
      disks.push({ name: d.id, blobUrl: `${this.#containerUrl()}/${diskBlobName(r.id, d.id)}`, snapshotTime: snap.disk });
    }
    const job = b.job && /^[A-Za-z0-9][-A-Za-z0-9_.]*$/.test(b.job) ? b.job : `${test ? 'test-failover' : 'failover'}-${r.id}-${this.#now()}`;
    const out = resolve(this.#opts.stateDir, 'azure', job);
    await mkdir(out, { recursive: true });
    const constructs = await loadConstructs();
    const result = await constructs.synthFailover({ desired, vm: pvm.metadata.name, test, disks, time: new Date(point.cutTime).toISOString(), out });
    if (!result.ok) {
      throw new TerminalError('invalid-argument', `cannot fail ${pvm.metadata.name} over to Azure: ${result.diagnostics.map(formatDiagnostic).join('; ')}`);
    }
    return {
      vm: result.vmName,
      recoveryPoint: { sequence: point.sequence, time: new Date(point.cutTime).toISOString() },
      terraformDir: out,
      terraformFile: result.file,
    };
  }
}

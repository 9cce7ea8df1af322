// The replica side of the failover verbs for replicas in one Azure container, served in-process
// (no agent runs in Azure). A failover to Azure cannot start a VM from here: it writes Terraform
// (managed disks imported from the point's snapshots, NICs with the failover addresses, the VM)
// into `<stateDir>/azure/<job>/` for the operator's `terraform apply`, and records the failover in
// the container so the primary's link stops changing those blobs. Which verb is legal is the
// replication state machine's to say, from the state the container's records imply.
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { AzureBlobLink } from './blob-link.ts';
import { diskBlobName, type PointMetadata } from './disk-blobs.ts';
import { azureCall } from './errors.ts';
import type { AzureFailoverRecord, AzureFailoverState, AzureTestFailoverRecord } from './failover-state.ts';
import { selectPoint } from '../core/replica/point-selector.ts';
import { replicaTransition, type ReplicaSideState } from '../core/replication/replication-state.ts';
import type { Clock } from '../model/clock.ts';
import type { DesiredState } from '../model/desired.ts';
import { formatDiagnostic } from '../model/diagnostics.ts';
import { TerminalError } from '../model/errors.ts';
import type { RecoveryPointSelector, RelationshipView } from '../model/replication-api.ts';
import type { FailoverContext, SiteVm } from '../model/site.ts';
import { loadConstructs } from '../model/terraform.ts';

export interface AzureReplicaSideOptions {
  /** The Azure site's name (a ProtectedVM names it as its replica). */
  site: string;
  /** The declarations the failover Terraform is made from (network mappings, failover addresses). */
  desired: () => DesiredState;
  /** drsite's state directory: failover Terraform goes to `<stateDir>/azure/<job>/`. */
  stateDir: string;
  /** Time for views (lag), test-failover records and job names. */
  clock: Clock;
}

/** What a failover verb brings to the Azure site: the point, the job id and (failover) planned or unplanned (@default unplanned). */
export type AzureFailoverBody = { recoveryPoint?: RecoveryPointSelector } & FailoverContext;

export interface AzureFailoverResult {
  vm: string;
  recoveryPoint: { sequence: number; time: string };
  state?: string;
  /** Where the Terraform went: run `terraform apply` there (and `terraform destroy` to remove it). */
  terraformDir: string;
  terraformFile: string;
}

/** One relationship as its container records it. */
export interface AzureRelationship {
  id: string;
  vm: string;
  primary: string;
  applied: number;
  disks: { id: string; size: number }[];
  points: PointMetadata[];
  failover?: AzureFailoverRecord;
  test?: AzureTestFailoverRecord;
}

/** The replica side's state: a failover's, else replicating once the initial copy is a point. */
function stateOf(r: AzureRelationship): ReplicaSideState {
  return r.failover?.state ?? (r.applied >= 1 ? 'Replicating' : 'ReadyForInitialReplication');
}

export class AzureReplicaSide {
  readonly #link: AzureBlobLink;
  /** The failover markers, the same the link reads before every change. */
  readonly #state: AzureFailoverState;
  readonly #opts: AzureReplicaSideOptions;

  constructor(link: AzureBlobLink, opts: AzureReplicaSideOptions) {
    this.#link = link;
    this.#state = link.failoverState;
    this.#opts = opts;
  }

  #now(): number {
    return this.#opts.clock.now();
  }

  // ------------------------------------------------------------------------------------ reading

  async relationships(): Promise<AzureRelationship[]> {
    const container = this.#link.container;
    const ids: string[] = [];
    await azureCall(container.containerName, async () => {
      for await (const b of container.listBlobsFlat()) {
        const m = /^([^/]+)\/relationship\.json$/.exec(b.name);
        if (m) ids.push(m[1]);
      }
    });
    return Promise.all(ids.sort().map((id) => this.relationship(id)));
  }

  async relationship(id: string): Promise<AzureRelationship> {
    const rec = await this.#link.record(id);
    const points = rec.disks.length > 0 ? (await this.#link.diskPoints(id, rec.disks[0].id)).map((p) => p.point) : [];
    const [failover, test] = await Promise.all([this.#state.failover(id), this.#state.test(id)]);
    return {
      id, vm: rec.vm, primary: rec.primary ?? '', applied: rec.applied, disks: rec.disks, points,
      ...(failover && { failover }), ...(test && { test }),
    };
  }

  view(r: AzureRelationship, now = this.#now()): RelationshipView {
    const latest = r.points.at(-1);
    const state = stateOf(r);
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
  vms(r: AzureRelationship): SiteVm[] {
    const vm = (name: string, sequence: number, kind: 'test' | 'failover'): SiteVm => ({
      name, disks: r.disks.map((d) => ({ name: d.id, size: d.size })), adapters: [], power: 'Running', origin: { relationshipId: r.id, recoveryPoint: sequence, kind },
    });
    return [...(r.test ? [vm(r.test.vm, r.test.sequence, 'test')] : []), ...(r.failover ? [vm(r.failover.vm, r.failover.sequence, 'failover')] : [])];
  }

  #containerUrl(): string {
    const u = new URL(this.#link.container.url);
    u.search = ''; // never a SAS token in status or Terraform
    return u.toString().replace(/\/$/, '');
  }

  // ---------------------------------------------------------------------------- failover verbs

  async testFailover(id: string, b: AzureFailoverBody): Promise<AzureFailoverResult> {
    const r = await this.relationship(id);
    if (r.test) throw new TerminalError('invalid-state', `${r.vm} already has a test failover in Azure (${r.test.vm}, Terraform in ${r.test.terraformDir}): clean it up first`);
    const out = await this.#terraform(r, b, true);
    await this.#state.setTest(id, { vm: out.vm, sequence: out.recoveryPoint.sequence, job: b.job ?? '', terraformDir: out.terraformDir, at: new Date(this.#now()).toISOString() });
    return out;
  }

  async cleanupTestFailover(id: string): Promise<{ removed: string[]; terraformDir?: string }> {
    const r = await this.relationship(id);
    if (!r.test) throw new TerminalError('invalid-state', `no test failover of ${r.vm} is active in Azure`);
    await this.#state.clearTest(id);
    // The Azure resources are Terraform's: `terraform destroy` in that directory removes them.
    return { removed: [r.test.vm], terraformDir: r.test.terraformDir };
  }

  async failover(id: string, b: AzureFailoverBody): Promise<AzureFailoverResult> {
    const r = await this.relationship(id);
    if (r.failover?.state === 'FailedOver') throw new TerminalError('invalid-state', `${r.vm} has already failed over to Azure and been committed`);
    if (r.applied < 1) throw new TerminalError('invalid-state', `the Azure replica of ${r.vm} has no complete copy yet`);
    // A first failover moves through the table; a change of point before commit stays where it is.
    const state = r.failover ? r.failover.state : (replicaTransition(stateOf(r), 'failover') as AzureFailoverRecord['state']);
    // The same call again before commit changes the point (new Terraform, new job directory).
    const out = await this.#terraform(r, b, false);
    const rec: AzureFailoverRecord = {
      kind: b.kind === 'planned' ? 'planned' : 'unplanned',
      state,
      vm: out.vm,
      sequence: out.recoveryPoint.sequence,
      job: b.job ?? '',
      terraformDir: out.terraformDir,
      at: new Date(this.#now()).toISOString(),
    };
    await this.#state.setFailover(id, rec);
    return { ...out, state: rec.state };
  }

  async commit(id: string): Promise<RelationshipView> {
    const r = await this.relationship(id);
    if (r.failover?.state !== 'FailoverWaitingCompletion') throw new TerminalError('invalid-state', `cannot commit ${r.vm}: no failover to Azure is waiting for completion`);
    r.failover = { ...r.failover, state: replicaTransition(r.failover.state, 'commit') as AzureFailoverRecord['state'] };
    await this.#state.setFailover(id, r.failover);
    return this.view(r);
  }

  /**
   * cancel: the failover before commit is abandoned; end-failover: failback has brought the VM
   * home. Either way the marker goes and the primary may change the blobs again; the Azure VM is
   * Terraform's to destroy.
   */
  async endFailover(id: string, verb: 'cancel' | 'end-failover'): Promise<RelationshipView & { terraformDir?: string }> {
    const r = await this.relationship(id);
    if (!r.failover) throw new TerminalError('invalid-state', `nothing to ${verb === 'cancel' ? 'cancel' : 'end'}: ${r.vm} has not failed over to Azure`);
    if (verb === 'cancel' && r.failover.state === 'FailedOver') throw new TerminalError('invalid-state', `the failover of ${r.vm} to Azure is committed: fail back instead of cancelling`);
    if (verb === 'cancel') replicaTransition(r.failover.state, 'cancel');
    const dir = r.failover.terraformDir;
    await this.#state.clearFailover(id);
    delete r.failover;
    return { ...this.view(r), terraformDir: dir };
  }

  /** Resolves the point and writes the failover Terraform for it into `<stateDir>/azure/<job>/`. */
  async #terraform(r: AzureRelationship, b: AzureFailoverBody, test: boolean): Promise<AzureFailoverResult> {
    const desired = this.#opts.desired();
    const site = this.#opts.site;
    const pvm = desired.protectedVms.find((p) => p.spec.vm === r.vm && p.spec.replica === site);
    if (!pvm) throw new TerminalError('not-found', `no ProtectedVM declares VM ${r.vm} with replica site ${site}`);
    const point = selectPoint(r.points.map((p) => ({ ...p, time: p.cutTime })), b.recoveryPoint ?? 'latest', `the Azure replica of ${r.vm}`);
    const disks = [];
    for (const d of r.disks) {
      const snap = (await this.#link.diskPoints(r.id, d.id)).find((p) => p.point.sequence === point.sequence);
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

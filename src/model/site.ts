// The Site port: one site as the reconciler, the CLI and the demo see it, whatever runs it (an
// agent embedded in this process, a remote agent over HTTPS, an Azure container). Reading changes
// nothing; every change is a typed verb of the replication service (Hyper-V's
// Msvm_ReplicationService). A verb a kind of site cannot do is refused with a TerminalError.
import type { PowerState } from './hypervisor.ts';
import type {
  CreateRelationshipRequest,
  CreateVmRequest,
  FailbackFromAzureRequest,
  FailbackFromAzureResult,
  FailoverRequest,
  PrepareResult,
  RecoveryPointInfo,
  RelationshipView,
  ReverseRequest,
  TestFailoverRequest,
} from './replication-api.ts';
import type { ResolvedPolicySpec, SiteSpec } from './desired.ts';

/** The Replica server's port when a Site does not set one (Hyper-V Replica's HTTPS default). */
export const DEFAULT_REPLICA_PORT = 8443;

/** A VM as a site's hypervisor reports it. */
export interface SiteVm {
  name: string;
  disks: { name: string; size: number }[];
  adapters: { name: string; network?: string }[];
  power: PowerState;
  /** Set on VMs a failover created (`<vm>-Test` for a test failover). */
  origin?: { relationshipId: string; recoveryPoint: number; kind: 'test' | 'failover' };
  nbdSocket?: string;
}

/** What one site reports at one instant; `reachable: false` carries why instead of the lists. */
export type SiteSnapshot =
  | { name: string; reachable: true; vms: SiteVm[]; relationships: RelationshipView[] }
  | { name: string; reachable: false; error: string };

/** What a replication cycle did (replicate-now, resync). */
export interface CycleOutcome {
  action: string;
  sequence?: number;
  applied: number;
  bytes?: number;
}

/** A failover to an azure site: where the Terraform for it was written (`terraform apply` there). */
export interface TerraformOutput {
  terraformDir?: string;
  terraformFile?: string;
}

/** What a failover or test failover started: the VM (`testVm` for a host's test failover) and its point. */
export interface FailoverOutcome extends TerraformOutput {
  vm?: string;
  testVm?: string;
  recoveryPoint: Pick<RecoveryPointInfo, 'sequence' | 'time'>;
  state?: string;
  nbdSocket?: string;
}

/** Which job a failover belongs to, and (for an azure site) whether it was planned. */
export interface FailoverContext {
  /** The job id: an azure site writes that failover's Terraform to `azure/<job>/`. */
  job?: string;
  kind?: 'planned' | 'unplanned';
}

export interface Site {
  readonly name: string;
  readonly kind: 'host' | 'azure';
  readonly embedded: boolean;
  /** https URL other agents use to reach this site's agent (the Replica server endpoint); empty for azure. */
  readonly endpoint: string;
  /** An azure site's spec (it holds replicas only; primaries replicate into its container). */
  readonly azure?: SiteSpec;
  /** Data directory of an embedded site's agent (VM disks, NBD sockets); undefined otherwise. */
  readonly dataDir?: string;

  /** Reads VMs and relationships; never changes anything. An unreachable site is a value, not a throw. */
  snapshot(): Promise<SiteSnapshot>;
  vms(): Promise<SiteVm[]>;
  relationships(): Promise<RelationshipView[]>;
  recoveryPoints(id: string): Promise<RecoveryPointInfo[]>;
  pointDigest(id: string, sequence: number, disk: string): Promise<{ sha256: string }>;

  createVm(req: CreateVmRequest): Promise<SiteVm>;
  /** Off: a graceful shutdown; refused when the guest does not stop within the timeout, unless `force`. */
  setVmPower(vm: string, power: PowerState, opts?: { timeoutMs?: number; force?: boolean }): Promise<SiteVm>;
  /** CreateReplicationRelationship on the primary host; idempotent for the same id. */
  createRelationship(req: CreateRelationshipRequest): Promise<RelationshipView>;
  removeRelationship(id: string): Promise<{ removed: string }>;
  startReplication(id: string): Promise<RelationshipView>;
  replicateNow(id: string): Promise<CycleOutcome>;
  modifySettings(id: string, policy: ResolvedPolicySpec): Promise<RelationshipView>;
  suspend(id: string): Promise<RelationshipView>;
  resume(id: string): Promise<RelationshipView>;
  resync(id: string): Promise<CycleOutcome>;
  moveStorage(id: string, path: string): Promise<RelationshipView>;
  extend(id: string, req: ReverseRequest): Promise<RelationshipView>;

  testFailover(id: string, req: TestFailoverRequest & FailoverContext): Promise<FailoverOutcome>;
  cleanupTestFailover(id: string): Promise<{ removed: string[] } & TerraformOutput>;
  preparePlannedFailover(id: string): Promise<PrepareResult>;
  failover(id: string, req: FailoverRequest & FailoverContext): Promise<FailoverOutcome>;
  commit(id: string): Promise<RelationshipView>;
  cancel(id: string): Promise<RelationshipView & TerraformOutput>;
  reverse(id: string, req: ReverseRequest): Promise<RelationshipView>;
  failbackFromAzure(id: string, req: FailbackFromAzureRequest): Promise<FailbackFromAzureResult>;
  replicateToAzure(id: string): Promise<RelationshipView>;
  /** An azure site, after a failback brought the VM home: the failover marker goes. */
  endFailover(id: string): Promise<RelationshipView & TerraformOutput>;

  close(): Promise<void>;
}

/** The certificate name the reconciler and the CLI present to agents (same as `drsite certs`). */
export const OPERATOR_NAME = 'drsite-operator';

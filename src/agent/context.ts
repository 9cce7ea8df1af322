// What the agent's parts share: its configuration, hypervisor, clock and log, and the live
// relationships and VM runtimes of this host. The daemon (agent.ts) owns it; relationships,
// failover, scheduler and routes act on it.
import type { RelationshipKeys } from '../core/types.ts';
import type { Clock } from '../model/clock.ts';
import { TerminalError } from '../model/errors.ts';
import type { Logger } from '../transport/logger.ts';
import type { AgentConfig } from './config.ts';
import type { Hypervisor } from '../model/hypervisor.ts';
import type { VmRuntime } from './hypervisor/vm-runtime.ts';
import type { AdoptedVm } from './adopted.ts';
import type { CutSource, ReplicaLink } from '../core/replication/ports.ts';
import type { PrimaryReplication } from '../core/replication/primary.ts';
import type { PrimaryRecord } from '../core/replication/primary-record.ts';
import type { ReplicaReplication } from '../core/replication/replica.ts';

export interface AgentContext {
  readonly config: AgentConfig;
  readonly hv: Hypervisor;
  readonly clock: Clock;
  readonly log: Logger;
  /** Folder of the VMs' NBD sockets. */
  readonly nbdDir: string;
  readonly runtimes: Map<string, VmRuntime>;
  /** Running QEMU VMs this agent did not start, tracked through QEMU's dirty bitmaps (adopted.ts). */
  readonly adopted: Map<string, AdoptedVm>;
  readonly primaries: Map<string, PrimaryReplication>;
  readonly replicas: Map<string, ReplicaReplication>;
  readonly keys: Map<string, RelationshipKeys>;
  /** The link to a replica: its agent over mutual TLS, or an Azure container (one per site). */
  linkTo(replica: PrimaryRecord['replica']): ReplicaLink;
  /** Opens the primary side of a relationship and puts it on the schedule. */
  addPrimary(record: PrimaryRecord, keys: RelationshipKeys, source?: CutSource): PrimaryReplication;
}

export const RELATIONSHIP_ID = /^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$/;

export function primaryOf(ctx: AgentContext, id: string): PrimaryReplication {
  const p = ctx.primaries.get(id);
  if (!p) throw new TerminalError('not-found', `no relationship ${id} with this host as primary (${ctx.config.name})`);
  return p;
}

export function replicaOf(ctx: AgentContext, id: string): ReplicaReplication {
  const r = ctx.replicas.get(id);
  if (!r) throw new TerminalError('not-found', `no relationship ${id} with this host as replica (${ctx.config.name})`);
  return r;
}

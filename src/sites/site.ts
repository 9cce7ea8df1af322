// The Site port: one host site as the reconciler sees it, whatever runs it (an agent embedded in
// this process or a remote one). Reading (`snapshot`) changes nothing; every change goes through
// `request` on the agent's replication-service API (src/transport/agent-api.ts).
import type { SiteSpec } from '../model/types.generated.ts';
import type { RelationshipView } from '../transport/agent-api.ts';

/** A VM as a site's hypervisor reports it (GET /v1/vms). */
export interface SiteVm {
  name: string;
  disks: { name: string; size: number }[];
  adapters: { name: string; network?: string }[];
  power: 'Running' | 'Off';
  /** Set on VMs a failover created (`<vm>-Test` for a test failover). */
  origin?: { relationshipId: string; recoveryPoint: number; kind: 'test' | 'failover' };
  nbdSocket?: string;
}

/** What one site reports at one instant; `reachable: false` carries why instead of the lists. */
export type SiteSnapshot =
  | { name: string; reachable: true; vms: SiteVm[]; relationships: RelationshipView[] }
  | { name: string; reachable: false; error: string };

export interface Site {
  readonly name: string;
  readonly embedded: boolean;
  /** https URL other agents use to reach this site's agent (the Replica server endpoint). */
  readonly endpoint: string;
  /** Reads VMs and relationships; never changes anything. An unreachable site is a value, not a throw. */
  snapshot(): Promise<SiteSnapshot>;
  /** One API call; rejects with the typed error (TerminalError / RetryableError) the agent answered. */
  request<T = unknown>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: object): Promise<T>;
  /** An azure site's spec (it holds replicas only; primaries replicate into its container). */
  readonly azure?: SiteSpec;
  /** Data directory of an embedded site's agent (VM disks, NBD sockets); undefined for a remote one. */
  readonly dataDir?: string;
  close(): Promise<void>;
}

/** The certificate name the reconciler and the CLI present to agents (same as `drsite certs`). */
export const OPERATOR_NAME = 'drsite-operator';

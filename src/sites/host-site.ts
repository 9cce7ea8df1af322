// A host site reached over HTTPS with mutual TLS: the remote driver, and the client half of the
// embedded one (which talks to its in-process agent over a real loopback socket too). Every verb
// is one route of the agent API's table (transport/agent-api.ts).
import type { PowerState } from '../model/hypervisor.ts';
import type { ResolvedPolicySpec } from '../model/desired.ts';
import type { CertBundle } from '../transport/certs.ts';
import { ROUTES, type PathParams, type RequestOf, type ResponseOf, type RouteSpec } from '../transport/agent-api.ts';
import type {
  CreateRelationshipRequest, CreateVmRequest, FailbackFromAzureRequest, FailbackFromAzureResult, FailoverRequest,
  PrepareResult, RecoveryPointInfo, RelationshipView, ReverseRequest, TestFailoverRequest,
} from '../transport/agent-api.ts';
import { callRoute } from '../transport/agent-call.ts';
import { createMtlsClient, type MtlsClient } from '../transport/mtls.ts';
import { notOnThisSite, type CycleOutcome, type FailoverContext, type FailoverOutcome, type Site, type SiteSnapshot, type SiteVm, type TerraformOutput } from './site.ts';

export interface HostSiteOptions {
  name: string;
  endpoint: string;
  /** The operator's certificate bundle. */
  tls: CertBundle;
  embedded?: boolean;
  dataDir?: string;
  /** Runs after the client is closed (the embedded driver stops its agent here). */
  onClose?: () => Promise<void>;
  /** How long a call may make no progress. @default 30000 */
  timeoutMs?: number;
}

/**
 * A power change waits for the guest: a shutdown waits out the site's shutdownTimeout (60 s by
 * default) before it is refused, so its call may be silent that long, and longer than `timeoutMs`.
 */
const POWER_TIMEOUT_MS = 10 * 60_000;

export class HostSite implements Site {
  readonly kind = 'host';
  readonly name: string;
  readonly endpoint: string;
  readonly embedded: boolean;
  readonly dataDir: string | undefined;
  readonly #client: MtlsClient;
  /** For power changes (POWER_TIMEOUT_MS); the same TLS identity, its own connections. */
  readonly #powerClient: MtlsClient;
  readonly #onClose: (() => Promise<void>) | undefined;

  constructor(opts: HostSiteOptions) {
    this.name = opts.name;
    this.endpoint = opts.endpoint;
    this.embedded = opts.embedded ?? false;
    this.dataDir = opts.dataDir;
    this.#onClose = opts.onClose;
    const tls = { ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key, baseUrl: opts.endpoint };
    this.#client = createMtlsClient({ ...tls, timeoutMs: opts.timeoutMs ?? 30_000 });
    this.#powerClient = createMtlsClient({ ...tls, timeoutMs: Math.max(opts.timeoutMs ?? 30_000, POWER_TIMEOUT_MS) });
  }

  /** A route with a body schema always gets a body (an empty one when the verb has no fields). */
  #call<R extends RouteSpec>(route: R, params: PathParams<R>, body?: RequestOf<R>, client = this.#client): Promise<ResponseOf<R>> {
    return callRoute(client, route, params, body ?? (route.body ? ({} as RequestOf<R>) : undefined));
  }

  async snapshot(): Promise<SiteSnapshot> {
    try {
      const [vms, relationships] = await Promise.all([this.vms(), this.relationships()]);
      return { name: this.name, reachable: true, vms, relationships };
    } catch (e) {
      return { name: this.name, reachable: false, error: (e as Error).message };
    }
  }

  vms = (): Promise<SiteVm[]> => this.#call(ROUTES.listVms, {});
  relationships = (): Promise<RelationshipView[]> => this.#call(ROUTES.listRelationships, {});
  recoveryPoints = (id: string): Promise<RecoveryPointInfo[]> => this.#call(ROUTES.recoveryPoints, { id });
  pointDigest = (id: string, seq: number, disk: string): Promise<{ sha256: string }> => this.#call(ROUTES.pointDigest, { id, seq, disk });
  createVm = (req: CreateVmRequest): Promise<SiteVm> => this.#call(ROUTES.createVm, {}, req);
  setVmPower = (vm: string, power: PowerState, opts: { timeoutMs?: number; force?: boolean } = {}): Promise<SiteVm> =>
    this.#call(ROUTES.setVmPower, { name: vm }, { power, ...opts }, this.#powerClient);
  createRelationship = (req: CreateRelationshipRequest): Promise<RelationshipView> => this.#call(ROUTES.createRelationship, {}, req);
  removeRelationship = (id: string): Promise<{ removed: string }> => this.#call(ROUTES.removeRelationship, { id });
  startReplication = (id: string): Promise<RelationshipView> => this.#call(ROUTES.startReplication, { id });
  replicateNow = (id: string): Promise<CycleOutcome> => this.#call(ROUTES.replicateNow, { id });
  modifySettings = (id: string, policy: ResolvedPolicySpec): Promise<RelationshipView> => this.#call(ROUTES.modifySettings, { id }, { policy });
  suspend = (id: string): Promise<RelationshipView> => this.#call(ROUTES.suspend, { id });
  resume = (id: string): Promise<RelationshipView> => this.#call(ROUTES.resume, { id });
  resync = (id: string): Promise<CycleOutcome> => this.#call(ROUTES.resync, { id });
  moveStorage = (id: string, path: string): Promise<RelationshipView> => this.#call(ROUTES.moveStorage, { id }, { path });
  extend = (id: string, req: ReverseRequest): Promise<RelationshipView> => this.#call(ROUTES.extend, { id }, req);
  testFailover = (id: string, req: TestFailoverRequest & FailoverContext): Promise<FailoverOutcome> => this.#call(ROUTES.testFailover, { id }, req);
  cleanupTestFailover = (id: string): Promise<{ removed: string[] } & TerraformOutput> => this.#call(ROUTES.cleanupTestFailover, { id });
  preparePlannedFailover = (id: string): Promise<PrepareResult> => this.#call(ROUTES.preparePlannedFailover, { id });
  failover = (id: string, req: FailoverRequest & FailoverContext): Promise<FailoverOutcome> => this.#call(ROUTES.failover, { id }, req);
  commit = (id: string): Promise<RelationshipView> => this.#call(ROUTES.commit, { id });
  cancel = (id: string): Promise<RelationshipView> => this.#call(ROUTES.cancel, { id });
  reverse = (id: string, req: ReverseRequest): Promise<RelationshipView> => this.#call(ROUTES.reverse, { id }, req);
  failbackFromAzure = (id: string, req: FailbackFromAzureRequest): Promise<FailbackFromAzureResult> => this.#call(ROUTES.failbackFromAzure, { id }, req);
  replicateToAzure = (id: string): Promise<RelationshipView> => this.#call(ROUTES.replicateToAzure, { id });

  async endFailover(): Promise<RelationshipView> {
    return notOnThisSite(this.name, 'end-failover', 'a host agent ends a failover by reverse replication or cancel');
  }

  async close(): Promise<void> {
    this.#client.close();
    this.#powerClient.close();
    await this.#onClose?.();
  }
}

// The agent API written down once: every route's method, path, caller, request schema and the
// types of its request and response. The agent's router registers its handlers by these entries,
// and every client (site drivers, the primary's replica link, the tests) calls through them, so
// no path is spelled anywhere else. Verbs follow Hyper-V's Msvm_ReplicationService:
// CreateReplicationRelationship, StartReplication, ModifyReplicationSettings,
// RequestReplicationStateChange, RemoveReplicationRelationship, GetReplicationStatistics.
import type { BlockDigestsJSON, CompareRequestJSON } from '../core/replication/block-checksums.ts';
import type { ResolvedPolicySpec } from '../model/desired.ts';
import type {
  AdoptVmRequest, CreateRelationshipRequest, CreateReplicaRequest, CreateVmRequest, FailbackFromAzureRequest, FailbackFromAzureResult,
  FailoverRequest, FailoverResult, PrepareResult, RecoveryPointInfo, RelationshipView, ReplicaStatus, ReplicationStatisticsView,
  ReverseRequest, SetPowerRequest, TestFailoverRequest, TestFailoverResult,
} from '../model/replication-api.ts';
import type { CycleOutcome, FailoverContext, SiteVm } from '../model/site.ts';

export type * from '../model/replication-api.ts';

/** Who may call a route: an operator (reconciler, CLI), or a primary its Replica server accepts. */
export type Caller = 'operator' | 'primary';

/**
 * One route of the agent API, untyped: what the router and the body check read. `body` (JSON
 * Schema) is what every request body of the route must satisfy, checked before any handler runs.
 */
export interface RouteSpec {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'HEAD';
  readonly path: string;
  readonly caller: Caller;
  readonly body?: object;
  /** The body is a stream the handler reads itself (log uploads); not JSON, not checked here. */
  readonly raw?: true;
  /** Success status. @default 200 */
  readonly status?: number;
}

/** A route with its path as a literal type and the types of its request and response bodies. */
export interface Route<P extends string = string, Req = unknown, Res = unknown> extends RouteSpec {
  readonly path: P;
  /** Never set: carries `Req` and `Res` for the client and the handlers. */
  readonly types?: { readonly req: Req; readonly res: Res };
}

/** The body of a route that takes none: nothing, or an empty object. */
export type NoBody = Record<string, never>;

/** The names of a path's `:name` segments. */
export type ParamNames<P extends string> = P extends `${string}:${infer N}/${infer Rest}` ? N | ParamNames<Rest> : P extends `${string}:${infer N}` ? N : never;
/** The values of a route's `:name` segments. */
export type PathParams<R extends RouteSpec> = { readonly [K in ParamNames<R['path']>]: string | number };
export type RequestOf<R> = R extends Route<string, infer Req, unknown> ? Req : never;
export type ResponseOf<R> = R extends Route<string, unknown, infer Res> ? Res : never;

/** Carries a route's request and response types (TypeScript cannot infer the path's literal type
 * while two other type arguments are given explicitly). */
const io = <Req = NoBody, Res = unknown>(): { req?: Req; res?: Res } => ({});

function route<const P extends string, Req, Res>(
  method: RouteSpec['method'], path: P, caller: Caller, _types: { req?: Req; res?: Res }, extra: Partial<Omit<RouteSpec, 'method' | 'path' | 'caller'>> = {},
): Route<P, Req, Res> {
  return { method, path, caller, ...extra };
}

/** The route's path with its `:name` segments filled in (percent-encoded). */
export function pathOf<R extends RouteSpec>(r: R, params: PathParams<R>): string {
  const values = params as Record<string, string | number>;
  return r.path.replace(/:(\w+)/g, (_, k: string) => {
    if (values[k] === undefined) throw new Error(`route ${r.path} needs :${k}`);
    return encodeURIComponent(String(values[k]));
  });
}

/** GET health: who answers, and how much it serves. */
export interface AgentHealth {
  name: string;
  replicaServer: boolean;
  vms: number;
  relationships: number;
}

// ------------------------------------------------------------------------- request schemas

const str = { type: 'string', minLength: 1 } as const;
const int = { type: 'integer', minimum: 0 } as const;
// A VM name as the hypervisors accept it: one plain path component (no `/`, no leading dot, no
// NUL). A primary names the replica's VM, which a failover later creates on this host.
const vmName = { type: 'string', pattern: '^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$' } as const;
// A replica disk id names its image file (`<id>.img`): the replica store's rule, checked before
// the handler so a refused request leaves no record behind.
const diskId = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$' } as const;
const obj = (properties: Record<string, object>, required: string[] = []) => ({ type: 'object', additionalProperties: false, properties, required });
const addr = obj({ address: str, gateway: str, dns: { type: 'array', items: str } }, ['address']);
const adapterSettings = obj({ name: str, network: { type: ['string', 'null'] }, ipv4: addr, ipv6: addr }, ['name']);
const pointSelector = { type: ['string', 'integer'] } as const;
// A policy arrives with its defaults applied by the config layer, which validated it against
// schemas/replicationpolicy.schema.json; here only what the agent reads first is required.
const policy = { type: 'object', required: ['frequency'], properties: { frequency: str } } as const;
// An azure replica has no endpoint (empty): its container is named by `azure`.
const boot = {
  oneOf: [obj({ kernel: str, initrd: str, append: { type: 'string' } }, ['kernel']), obj({ firmware: { enum: ['bios', 'uefi'] } }, ['firmware'])],
} as const;
const vmConfig = obj({
  cpus: { type: 'integer', minimum: 1, maximum: 255 },
  memoryMiB: { type: 'integer', minimum: 16 },
  boot,
  macs: { type: 'object', additionalProperties: { type: 'string', pattern: '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$' } },
  domainXml: { type: 'string', minLength: 1, maxLength: 1 << 20 },
});
const replicaRef = obj({ name: str, endpoint: { type: 'string' }, azure: { type: 'object' } }, ['name', 'endpoint']);
const retention = obj({ additional: int, appConsistentEvery: int }, ['additional']);
const reverseBody = obj({ id: str, replica: replicaRef, policy, start: { type: 'boolean' }, method: { enum: ['minimize-downtime', 'full-download'] } }, ['id', 'replica', 'policy']);

// ------------------------------------------------------------------------------ route table

export const ROUTES = {
  health: route('GET', '/v1/health', 'operator', io<NoBody, AgentHealth>()),
  listVms: route('GET', '/v1/vms', 'operator', io<NoBody, SiteVm[]>()),
  createVm: route('POST', '/v1/vms', 'operator', io<CreateVmRequest, SiteVm>(), {
    status: 201,
    body: obj({
      name: str,
      disks: { type: 'array', minItems: 1, items: obj({ name: str, size: { type: 'integer', minimum: 512 } }, ['name', 'size']) },
      adapters: { type: 'array', items: obj({ name: str, network: str, mac: { type: 'string', pattern: '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$' } }, ['name']) },
      power: { enum: ['Running', 'Off'] },
      cpus: { type: 'integer', minimum: 1, maximum: 255 },
      memoryMiB: { type: 'integer', minimum: 16 },
      boot,
    }, ['name', 'disks']),
  }),
  adoptVm: route('POST', '/v1/vms/adopt', 'operator', io<AdoptVmRequest, SiteVm & { tracking: string }>(), {
    status: 201,
    body: obj({ name: str, qmpSocket: str, disks: { type: 'array', minItems: 1, items: obj({ name: { type: 'string', pattern: '^[A-Za-z0-9][-A-Za-z0-9_.]{0,63}$' }, node: str }, ['name', 'node']) } }, ['name', 'qmpSocket', 'disks']),
  }),
  getVm: route('GET', '/v1/vms/:name', 'operator', io<NoBody, SiteVm>()),
  setVmPower: route('POST', '/v1/vms/:name/power', 'operator', io<SetPowerRequest, SiteVm>(), {
    body: obj({ power: { enum: ['Running', 'Off'] }, timeoutMs: { type: 'integer', minimum: 0 }, force: { type: 'boolean' } }, ['power']),
  }),
  listRelationships: route('GET', '/v1/relationships', 'operator', io<NoBody, RelationshipView[]>()),
  createRelationship: route('POST', '/v1/relationships', 'operator', io<CreateRelationshipRequest, RelationshipView>(), {
    status: 201,
    body: obj({ id: str, vm: str, replica: replicaRef, policy, excludeDisks: { type: 'array', items: str }, replicaStoragePath: str, replicationGroup: str }, ['id', 'vm', 'replica', 'policy']),
  }),
  getRelationship: route('GET', '/v1/relationships/:id', 'operator', io<NoBody, RelationshipView>()),
  removeRelationship: route('DELETE', '/v1/relationships/:id', 'operator', io<NoBody, { removed: string }>()),
  startReplication: route('POST', '/v1/relationships/:id/start', 'operator', io<NoBody, RelationshipView>(), { status: 202 }),
  replicateNow: route('POST', '/v1/relationships/:id/replicate-now', 'operator', io<NoBody, CycleOutcome>()),
  replicateGroupNow: route('POST', '/v1/replication-groups/:group/replicate-now', 'operator', io<NoBody, Record<string, CycleOutcome | { error: string }>>()),
  resync: route('POST', '/v1/relationships/:id/resync', 'operator', io<NoBody, CycleOutcome>()),
  modifySettings: route('PUT', '/v1/relationships/:id/settings', 'operator', io<{ policy: ResolvedPolicySpec }, RelationshipView>(), { body: obj({ policy }, ['policy']) }),
  suspend: route('POST', '/v1/relationships/:id/suspend', 'operator', io<NoBody, RelationshipView>()),
  resume: route('POST', '/v1/relationships/:id/resume', 'operator', io<NoBody, RelationshipView>()),
  statistics: route('GET', '/v1/relationships/:id/statistics', 'operator', io<NoBody, ReplicationStatisticsView>()),
  resetStatistics: route('POST', '/v1/relationships/:id/statistics/reset', 'operator', io<NoBody, ReplicationStatisticsView>()),
  recoveryPoints: route('GET', '/v1/relationships/:id/recovery-points', 'operator', io<NoBody, RecoveryPointInfo[]>()),
  pointDigest: route('GET', '/v1/relationships/:id/recovery-points/:seq/disks/:disk/sha256', 'operator', io<NoBody, { sha256: string }>()),
  importMedia: route('POST', '/v1/relationships/:id/import', 'operator', io<{ folder: string }, ReplicaStatus>(), { body: obj({ folder: str }, ['folder']) }),
  testFailover: route('POST', '/v1/relationships/:id/test-failover', 'operator', io<TestFailoverRequest & FailoverContext, TestFailoverResult>(), {
    body: obj({ recoveryPoint: pointSelector, network: { type: ['string', 'null'] }, adapters: { type: 'array', items: adapterSettings }, job: str }),
  }),
  cleanupTestFailover: route('POST', '/v1/relationships/:id/cleanup-test-failover', 'operator', io<NoBody, { removed: string[]; terraformDir?: string; terraformFile?: string }>()),
  preparePlannedFailover: route('POST', '/v1/relationships/:id/prepare-planned-failover', 'operator', io<NoBody, PrepareResult>()),
  failover: route('POST', '/v1/relationships/:id/failover', 'operator', io<FailoverRequest & FailoverContext, FailoverResult>(), {
    body: obj({ recoveryPoint: pointSelector, adapters: { type: 'array', items: adapterSettings }, start: { type: 'boolean' }, kind: { enum: ['planned', 'unplanned'] }, job: str }),
  }),
  commit: route('POST', '/v1/relationships/:id/commit', 'operator', io<NoBody, RelationshipView>()),
  cancel: route('POST', '/v1/relationships/:id/cancel', 'operator', io<NoBody, RelationshipView>()),
  failbackFromAzure: route('POST', '/v1/relationships/:id/failback-from-azure', 'operator', io<FailbackFromAzureRequest, FailbackFromAzureResult>(), { body: obj({ method: { enum: ['minimize-downtime', 'full-download'] } }) }),
  replicateToAzure: route('POST', '/v1/relationships/:id/replicate-to-azure', 'operator', io<NoBody, RelationshipView>()),
  moveStorage: route('POST', '/v1/relationships/:id/move-storage', 'operator', io<{ path: string }, RelationshipView>(), { body: obj({ path: { type: 'string', pattern: '^/' } }, ['path']) }),
  extend: route('POST', '/v1/relationships/:id/extend', 'operator', io<ReverseRequest, RelationshipView>(), { body: reverseBody }),
  reverse: route('POST', '/v1/relationships/:id/reverse', 'operator', io<ReverseRequest, RelationshipView>(), { body: reverseBody }),
  // Replica server: called by primaries.
  createReplica: route('POST', '/v1/replica/relationships', 'primary', io<CreateReplicaRequest, ReplicaStatus>(), {
    status: 201,
    body: obj({
      id: str,
      vm: vmName,
      disks: { type: 'array', minItems: 1, items: obj({ id: diskId, size: int }, ['id', 'size']) },
      keys: obj({ encryptionKey: str, macKey: str }, ['encryptionKey', 'macKey']),
      retention,
      storagePath: str,
      seedFromVm: vmName,
      discardSeed: { type: 'boolean' },
      vmConfig,
    }, ['id', 'vm', 'disks', 'keys', 'retention']),
  }),
  replicaStatus: route('GET', '/v1/replica/relationships/:id', 'primary', io<NoBody, ReplicaStatus>()),
  removeReplica: route('DELETE', '/v1/replica/relationships/:id', 'primary', io<NoBody, { removed: string }>()),
  uploadLog: route('PUT', '/v1/replica/relationships/:id/logs/:seq/:disk', 'primary', io<unknown, unknown>(), { raw: true }),
  uploadOffset: route('HEAD', '/v1/replica/relationships/:id/logs/:seq/:disk', 'primary', io<unknown, unknown>(), { raw: true }),
  replicaApply: route('POST', '/v1/replica/relationships/:id/apply', 'primary', io<NoBody, ReplicaStatus>()),
  // A segment of a streamed initial copy (core/replication/initial-stream.ts): one sealed log, read as it arrives.
  uploadInitialSegment: route('PUT', '/v1/replica/relationships/:id/initial/:disk/:segment', 'primary', io<unknown, ReplicaStatus>(), { raw: true }),
  replicaDiscardPending: route('POST', '/v1/replica/relationships/:id/discard-pending', 'primary', io<NoBody, ReplicaStatus>()),
  replicaChecksums: route('GET', '/v1/replica/relationships/:id/disks/:disk/checksums', 'primary', io<NoBody, BlockDigestsJSON>()),
  replicaCompare: route('POST', '/v1/replica/relationships/:id/disks/:disk/checksums', 'primary', io<CompareRequestJSON, BlockDigestsJSON>(), {
    body: obj({ blockSize: { type: 'integer' }, runs: { type: 'array', items: int } }, ['blockSize']),
  }),
  replicaSettings: route('PUT', '/v1/replica/relationships/:id/settings', 'primary', io<{ retention: CreateReplicaRequest['retention'] }, { ok: true }>(), { body: obj({ retention }, ['retention']) }),
} as const;

export type RouteName = keyof typeof ROUTES;
export type AnyRoute = (typeof ROUTES)[RouteName];

/** The body a route without a schema accepts: nothing, or an empty object. */
export const NO_FIELDS = obj({});

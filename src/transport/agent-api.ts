// The agent API written down once: every route's method, path, caller, request schema and the
// types of its request and response. The agent's router registers its handlers by these entries,
// and every client (site drivers, the primary's replica link, the tests) calls through them, so
// no path is spelled anywhere else. Verbs follow Hyper-V's Msvm_ReplicationService:
// CreateReplicationRelationship, StartReplication, ModifyReplicationSettings,
// RequestReplicationStateChange, RemoveReplicationRelationship, GetReplicationStatistics.
import type { BlockDigestsJSON } from '../core/replication/block-checksums.ts';
import type {
  FailbackFromAzureResult, FailoverResult, PrepareResult, RecoveryPointInfo, RelationshipView, ReplicaStatus, ReplicationStatisticsView, TestFailoverResult,
} from '../model/replication-api.ts';
import type { CycleOutcome, SiteVm } from '../model/site.ts';
import { requestSchema, type BodySchema } from './request-schemas.ts';

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

/** Carries a route's response type (TypeScript cannot infer the path's literal type while another
 * type argument is given explicitly); the request type comes from the route's body schema. */
const returns = <Res>(): { res?: Res } => ({});

interface RouteOptions<Req> {
  /** The route's definition in schemas/agent-api/requests.schema.json (requestSchema). */
  readonly body?: BodySchema<Req>;
  readonly raw?: true;
  readonly status?: number;
}

/** A table entry: its request type is its body schema's (none: NoBody), its response type `Res`. */
function route<const P extends string, Res, Req = NoBody>(method: RouteSpec['method'], path: P, caller: Caller, _res: { res?: Res }, opts: RouteOptions<Req> = {}): Route<P, Req, Res> {
  return { method, path, caller, ...opts };
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

// ------------------------------------------------------------------------------ route table

// A route's body schema is its definition in schemas/agent-api/requests.schema.json, the source
// its request type is generated from (src/model/generated/agent-api.ts).
export const ROUTES = {
  health: route('GET', '/v1/health', 'operator', returns<AgentHealth>()),
  listVms: route('GET', '/v1/vms', 'operator', returns<SiteVm[]>()),
  createVm: route('POST', '/v1/vms', 'operator', returns<SiteVm>(), { status: 201, body: requestSchema('CreateVmRequest') }),
  adoptVm: route('POST', '/v1/vms/adopt', 'operator', returns<SiteVm>(), { status: 201, body: requestSchema('AdoptVmRequest') }),
  getVm: route('GET', '/v1/vms/:name', 'operator', returns<SiteVm>()),
  setVmPower: route('POST', '/v1/vms/:name/power', 'operator', returns<SiteVm>(), { body: requestSchema('SetPowerRequest') }),
  listRelationships: route('GET', '/v1/relationships', 'operator', returns<RelationshipView[]>()),
  createRelationship: route('POST', '/v1/relationships', 'operator', returns<RelationshipView>(), { status: 201, body: requestSchema('CreateRelationshipRequest') }),
  getRelationship: route('GET', '/v1/relationships/:id', 'operator', returns<RelationshipView>()),
  removeRelationship: route('DELETE', '/v1/relationships/:id', 'operator', returns<{ removed: string }>()),
  startReplication: route('POST', '/v1/relationships/:id/start', 'operator', returns<RelationshipView>(), { status: 202 }),
  replicateNow: route('POST', '/v1/relationships/:id/replicate-now', 'operator', returns<CycleOutcome>()),
  replicateGroupNow: route('POST', '/v1/replication-groups/:group/replicate-now', 'operator', returns<Record<string, CycleOutcome | { error: string }>>()),
  resync: route('POST', '/v1/relationships/:id/resync', 'operator', returns<CycleOutcome>()),
  modifySettings: route('PUT', '/v1/relationships/:id/settings', 'operator', returns<RelationshipView>(), { body: requestSchema('ModifySettingsRequest') }),
  suspend: route('POST', '/v1/relationships/:id/suspend', 'operator', returns<RelationshipView>()),
  resume: route('POST', '/v1/relationships/:id/resume', 'operator', returns<RelationshipView>()),
  statistics: route('GET', '/v1/relationships/:id/statistics', 'operator', returns<ReplicationStatisticsView>()),
  resetStatistics: route('POST', '/v1/relationships/:id/statistics/reset', 'operator', returns<ReplicationStatisticsView>()),
  recoveryPoints: route('GET', '/v1/relationships/:id/recovery-points', 'operator', returns<RecoveryPointInfo[]>()),
  pointDigest: route('GET', '/v1/relationships/:id/recovery-points/:seq/disks/:disk/sha256', 'operator', returns<{ sha256: string }>()),
  importMedia: route('POST', '/v1/relationships/:id/import', 'operator', returns<ReplicaStatus>(), { body: requestSchema('ImportMediaRequest') }),
  testFailover: route('POST', '/v1/relationships/:id/test-failover', 'operator', returns<TestFailoverResult>(), { body: requestSchema('TestFailoverRequest') }),
  cleanupTestFailover: route('POST', '/v1/relationships/:id/cleanup-test-failover', 'operator', returns<{ removed: string[]; terraformDir?: string; terraformFile?: string }>()),
  preparePlannedFailover: route('POST', '/v1/relationships/:id/prepare-planned-failover', 'operator', returns<PrepareResult>()),
  failover: route('POST', '/v1/relationships/:id/failover', 'operator', returns<FailoverResult>(), { body: requestSchema('FailoverRequest') }),
  commit: route('POST', '/v1/relationships/:id/commit', 'operator', returns<RelationshipView>()),
  cancel: route('POST', '/v1/relationships/:id/cancel', 'operator', returns<RelationshipView>()),
  failbackFromAzure: route('POST', '/v1/relationships/:id/failback-from-azure', 'operator', returns<FailbackFromAzureResult>(), { body: requestSchema('FailbackFromAzureRequest') }),
  replicateToAzure: route('POST', '/v1/relationships/:id/replicate-to-azure', 'operator', returns<RelationshipView>()),
  moveStorage: route('POST', '/v1/relationships/:id/move-storage', 'operator', returns<RelationshipView>(), { body: requestSchema('MoveStorageRequest') }),
  extend: route('POST', '/v1/relationships/:id/extend', 'operator', returns<RelationshipView>(), { body: requestSchema('ReverseRequest') }),
  reverse: route('POST', '/v1/relationships/:id/reverse', 'operator', returns<RelationshipView>(), { body: requestSchema('ReverseRequest') }),
  // Replica server: called by primaries.
  createReplica: route('POST', '/v1/replica/relationships', 'primary', returns<ReplicaStatus>(), { status: 201, body: requestSchema('CreateReplicaRequest') }),
  replicaStatus: route('GET', '/v1/replica/relationships/:id', 'primary', returns<ReplicaStatus>()),
  removeReplica: route('DELETE', '/v1/replica/relationships/:id', 'primary', returns<{ removed: string }>()),
  uploadLog: route('PUT', '/v1/replica/relationships/:id/logs/:seq/:disk', 'primary', returns<unknown>(), { raw: true }),
  uploadOffset: route('HEAD', '/v1/replica/relationships/:id/logs/:seq/:disk', 'primary', returns<unknown>(), { raw: true }),
  replicaApply: route('POST', '/v1/replica/relationships/:id/apply', 'primary', returns<ReplicaStatus>()),
  // A segment of a streamed initial copy (core/replication/initial-stream.ts): one sealed log, read as it arrives.
  uploadInitialSegment: route('PUT', '/v1/replica/relationships/:id/initial/:disk/:segment', 'primary', returns<ReplicaStatus>(), { raw: true }),
  replicaDiscardPending: route('POST', '/v1/replica/relationships/:id/discard-pending', 'primary', returns<ReplicaStatus>()),
  replicaChecksums: route('GET', '/v1/replica/relationships/:id/disks/:disk/checksums', 'primary', returns<BlockDigestsJSON>()),
  replicaCompare: route('POST', '/v1/replica/relationships/:id/disks/:disk/checksums', 'primary', returns<BlockDigestsJSON>(), { body: requestSchema('ReplicaCompareRequest') }),
  replicaSettings: route('PUT', '/v1/replica/relationships/:id/settings', 'primary', returns<{ ok: true }>(), { body: requestSchema('ReplicaSettingsRequest') }),
} as const;

export type RouteName = keyof typeof ROUTES;
export type AnyRoute = (typeof ROUTES)[RouteName];

/** The body a route without a schema accepts: nothing, or an empty object. */
export const NO_FIELDS = { type: 'object', additionalProperties: false, properties: {}, required: [] } as const;

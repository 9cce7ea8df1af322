// The wire format of the agent API: paths and JSON bodies shared by the agent (server), the
// primary-to-replica link and the site drivers (clients). Verbs follow Hyper-V's
// Msvm_ReplicationService: CreateReplicationRelationship, StartReplication,
// ModifyReplicationSettings, RequestReplicationStateChange, RemoveReplicationRelationship,
// GetReplicationStatistics.


export const API = {
  health: '/v1/health',
  vms: '/v1/vms',
  vm: (name: string) => `/v1/vms/${enc(name)}`,
  vmPower: (name: string) => `/v1/vms/${enc(name)}/power`,
  relationships: '/v1/relationships',
  relationship: (id: string) => `/v1/relationships/${enc(id)}`,
  startReplication: (id: string) => `/v1/relationships/${enc(id)}/start`,
  replicateNow: (id: string) => `/v1/relationships/${enc(id)}/replicate-now`,
  settings: (id: string) => `/v1/relationships/${enc(id)}/settings`,
  suspend: (id: string) => `/v1/relationships/${enc(id)}/suspend`,
  resume: (id: string) => `/v1/relationships/${enc(id)}/resume`,
  statistics: (id: string) => `/v1/relationships/${enc(id)}/statistics`,
  resetStatistics: (id: string) => `/v1/relationships/${enc(id)}/statistics/reset`,
  recoveryPoints: (id: string) => `/v1/relationships/${enc(id)}/recovery-points`,
  pointDigest: (id: string, seq: number, disk: string) =>
    `/v1/relationships/${enc(id)}/recovery-points/${seq}/disks/${enc(disk)}/sha256`,
  importMedia: (id: string) => `/v1/relationships/${enc(id)}/import`,
  // Failover family. Replica host: test-failover, cleanup-test-failover, failover, commit, cancel,
  // reverse. Primary host: prepare-planned-failover (and cancel of a prepared one).
  testFailover: (id: string) => `/v1/relationships/${enc(id)}/test-failover`,
  cleanupTestFailover: (id: string) => `/v1/relationships/${enc(id)}/cleanup-test-failover`,
  preparePlannedFailover: (id: string) => `/v1/relationships/${enc(id)}/prepare-planned-failover`,
  failover: (id: string) => `/v1/relationships/${enc(id)}/failover`,
  commit: (id: string) => `/v1/relationships/${enc(id)}/commit`,
  cancel: (id: string) => `/v1/relationships/${enc(id)}/cancel`,
  reverse: (id: string) => `/v1/relationships/${enc(id)}/reverse`,
  resync: (id: string) => `/v1/relationships/${enc(id)}/resync`,
  moveStorage: (id: string) => `/v1/relationships/${enc(id)}/move-storage`,
  extend: (id: string) => `/v1/relationships/${enc(id)}/extend`,
  // Failback from Azure. Primary host: download what the Azure VM wrote, then replicate to Azure
  // again. Azure site (served in-process by src/sites/azure-site.ts): end the failover.
  failbackFromAzure: (id: string) => `/v1/relationships/${enc(id)}/failback-from-azure`,
  replicateToAzure: (id: string) => `/v1/relationships/${enc(id)}/replicate-to-azure`,
  endFailover: (id: string) => `/v1/relationships/${enc(id)}/end-failover`,
  // Primary agent -> Replica server.
  replicaRelationships: '/v1/replica/relationships',
  replicaRelationship: (id: string) => `/v1/replica/relationships/${enc(id)}`,
  replicaLog: (id: string, seq: number, disk: string) => `/v1/replica/relationships/${enc(id)}/logs/${seq}/${enc(disk)}`,
  replicaApply: (id: string) => `/v1/replica/relationships/${enc(id)}/apply`,
  replicaInitialSegment: (id: string, disk: string, segment: number) => `/v1/replica/relationships/${enc(id)}/initial/${enc(disk)}/${segment}`,
  replicaDiscardPending: (id: string) => `/v1/replica/relationships/${enc(id)}/discard-pending`,
  replicaChecksums: (id: string, disk: string) => `/v1/replica/relationships/${enc(id)}/disks/${enc(disk)}/checksums`,
  replicaSettings: (id: string) => `/v1/replica/relationships/${enc(id)}/settings`,
} as const;

function enc(s: string): string {
  return encodeURIComponent(s);
}

export type * from '../model/replication-api.ts';

// ------------------------------------------------------------------------------------ route table

/** Who may call a route: an operator (reconciler, CLI), or a primary its Replica server accepts. */
export type Caller = 'operator' | 'primary';

/**
 * One route of the agent API. The server's routes come from this table; `body` (JSON Schema) is
 * what every request body of the route must satisfy, checked before any handler runs.
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
const R = (method: RouteSpec['method'], path: string, caller: Caller, extra: Partial<RouteSpec> = {}): RouteSpec => ({ method, path, caller, ...extra });

export const ROUTES = {
  health: R('GET', '/v1/health', 'operator'),
  listVms: R('GET', '/v1/vms', 'operator'),
  createVm: R('POST', '/v1/vms', 'operator', {
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
  adoptVm: R('POST', '/v1/vms/adopt', 'operator', {
    status: 201,
    body: obj({ name: str, qmpSocket: str, disks: { type: 'array', minItems: 1, items: obj({ name: { type: 'string', pattern: '^[A-Za-z0-9][-A-Za-z0-9_.]{0,63}$' }, node: str }, ['name', 'node']) } }, ['name', 'qmpSocket', 'disks']),
  }),
  getVm: R('GET', '/v1/vms/:name', 'operator'),
  setVmPower: R('POST', '/v1/vms/:name/power', 'operator', {
    body: obj({ power: { enum: ['Running', 'Off'] }, timeoutMs: { type: 'integer', minimum: 0 }, force: { type: 'boolean' } }, ['power']),
  }),
  listRelationships: R('GET', '/v1/relationships', 'operator'),
  createRelationship: R('POST', '/v1/relationships', 'operator', {
    status: 201,
    body: obj({ id: str, vm: str, replica: replicaRef, policy, excludeDisks: { type: 'array', items: str }, replicaStoragePath: str, replicationGroup: str }, ['id', 'vm', 'replica', 'policy']),
  }),
  getRelationship: R('GET', '/v1/relationships/:id', 'operator'),
  removeRelationship: R('DELETE', '/v1/relationships/:id', 'operator'),
  startReplication: R('POST', '/v1/relationships/:id/start', 'operator', { status: 202 }),
  replicateNow: R('POST', '/v1/relationships/:id/replicate-now', 'operator'),
  replicateGroupNow: R('POST', '/v1/replication-groups/:group/replicate-now', 'operator'),
  resync: R('POST', '/v1/relationships/:id/resync', 'operator'),
  modifySettings: R('PUT', '/v1/relationships/:id/settings', 'operator', { body: obj({ policy }, ['policy']) }),
  suspend: R('POST', '/v1/relationships/:id/suspend', 'operator'),
  resume: R('POST', '/v1/relationships/:id/resume', 'operator'),
  statistics: R('GET', '/v1/relationships/:id/statistics', 'operator'),
  resetStatistics: R('POST', '/v1/relationships/:id/statistics/reset', 'operator'),
  recoveryPoints: R('GET', '/v1/relationships/:id/recovery-points', 'operator'),
  pointDigest: R('GET', '/v1/relationships/:id/recovery-points/:seq/disks/:disk/sha256', 'operator'),
  importMedia: R('POST', '/v1/relationships/:id/import', 'operator', { body: obj({ folder: str }, ['folder']) }),
  testFailover: R('POST', '/v1/relationships/:id/test-failover', 'operator', {
    body: obj({ recoveryPoint: pointSelector, network: { type: ['string', 'null'] }, adapters: { type: 'array', items: adapterSettings }, job: str }),
  }),
  cleanupTestFailover: R('POST', '/v1/relationships/:id/cleanup-test-failover', 'operator'),
  preparePlannedFailover: R('POST', '/v1/relationships/:id/prepare-planned-failover', 'operator'),
  failover: R('POST', '/v1/relationships/:id/failover', 'operator', {
    body: obj({ recoveryPoint: pointSelector, adapters: { type: 'array', items: adapterSettings }, start: { type: 'boolean' }, kind: { enum: ['planned', 'unplanned'] }, job: str }),
  }),
  commit: R('POST', '/v1/relationships/:id/commit', 'operator'),
  cancel: R('POST', '/v1/relationships/:id/cancel', 'operator'),
  failbackFromAzure: R('POST', '/v1/relationships/:id/failback-from-azure', 'operator', { body: obj({ method: { enum: ['minimize-downtime', 'full-download'] } }) }),
  replicateToAzure: R('POST', '/v1/relationships/:id/replicate-to-azure', 'operator'),
  moveStorage: R('POST', '/v1/relationships/:id/move-storage', 'operator', { body: obj({ path: { type: 'string', pattern: '^/' } }, ['path']) }),
  extend: R('POST', '/v1/relationships/:id/extend', 'operator', { body: reverseBody }),
  reverse: R('POST', '/v1/relationships/:id/reverse', 'operator', { body: reverseBody }),
  // Replica server: called by primaries.
  createReplica: R('POST', '/v1/replica/relationships', 'primary', {
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
  replicaStatus: R('GET', '/v1/replica/relationships/:id', 'primary'),
  removeReplica: R('DELETE', '/v1/replica/relationships/:id', 'primary'),
  uploadLog: R('PUT', '/v1/replica/relationships/:id/logs/:seq/:disk', 'primary', { raw: true }),
  uploadOffset: R('HEAD', '/v1/replica/relationships/:id/logs/:seq/:disk', 'primary', { raw: true }),
  replicaApply: R('POST', '/v1/replica/relationships/:id/apply', 'primary'),
  // A segment of a streamed initial copy (core/replication/initial-stream.ts): one sealed log, read as it arrives.
  uploadInitialSegment: R('PUT', '/v1/replica/relationships/:id/initial/:disk/:segment', 'primary', { raw: true }),
  replicaDiscardPending: R('POST', '/v1/replica/relationships/:id/discard-pending', 'primary'),
  replicaChecksums: R('GET', '/v1/replica/relationships/:id/disks/:disk/checksums', 'primary'),
  replicaCompare: R('POST', '/v1/replica/relationships/:id/disks/:disk/checksums', 'primary', {
    body: obj({ blockSize: { type: 'integer' }, runs: { type: 'array', items: int } }, ['blockSize']),
  }),
  replicaSettings: R('PUT', '/v1/replica/relationships/:id/settings', 'primary', { body: obj({ retention }, ['retention']) }),
} as const satisfies Record<string, RouteSpec>;

export type RouteName = keyof typeof ROUTES;

/** The body of a route that takes none: nothing, or an empty object. */
export const NO_FIELDS = obj({});

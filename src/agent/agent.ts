// The per-host daemon: serves its VMs' disks over NBD through the change tracker, runs the
// primary side of its relationships on the policy's schedule, acts as a Replica server for the
// primaries it accepts, and answers the replication-service API over HTTPS with mutual TLS.
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readJsonIfExists, writeJsonAtomic } from '../core/atomic-file.ts';
import type { TrackedDisk } from '../core/tracker.ts';
import { compareRequestFromJSON, digestsToJSON } from '../core/block-checksums.ts';
import type { RelationshipKeys } from '../core/types.ts';
import { systemClock, type Clock } from '../model/clock.ts';
import { RetryableError, TerminalError, isRecoverable } from '../model/errors.ts';
import type { ReplicationPolicySpec } from '../model/types.generated.ts';
import {
  API,
  type CreateRelationshipRequest,
  type CreateReplicaRequest,
  type CreateVmRequest,
  type FailbackFromAzureRequest,
  type FailbackFromAzureResult,
  type FailoverAdapterSettings,
  type FailoverRequest,
  type FailoverResult,
  type RelationshipView,
  type ReverseRequest,
  type TestFailoverRequest,
  type TestFailoverResult,
} from '../transport/agent-api.ts';
import { authorizePeer } from '../transport/authorization.ts';
import { sendError } from '../transport/http-errors.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import { readJson } from '../transport/wire.ts';
import { loadCertBundle, type CertBundle } from '../transport/certs.ts';
import { stderrLogger, type Logger } from '../transport/logger.ts';
import { createMtlsServer, type MtlsServer } from '../transport/mtls.ts';
import { handleUpload } from '../transport/upload.ts';
import type { AgentConfig } from './config.ts';
import { FilesHypervisor, type VmAdapter, type VmDefinition } from './hypervisor/files.ts';
import { HttpReplicaLink } from './links/https.ts';
import { AzureBlobLink, azureLinkFromSite } from './links/azure/blob-link.ts';
import { failbackFromAzure } from './links/azure/failback.ts';
import type { Site } from '../model/types.generated.ts';
import {
  PrimaryReplication,
  groupMemberSource,
  newPrimaryRecord,
  retentionOf,
  vmSource,
  type CutSource,
  type CycleResult,
  type GroupMemberSource,
  type PrimaryRecord,
  type ReplicaLink,
} from './primary.ts';
import { cutGroup } from '../core/cut.ts';
import { ReplicaReplication, type ReplicaRecord } from './replica.ts';
import { Router, type RouteContext } from './router.ts';
import { VmRuntime, type ClosableDevice } from './hypervisor/vm-runtime.ts';

export interface AgentOptions {
  clock?: Clock;
  log?: Logger;
  /** Run cycles on the policy schedule. Off, cycles run only on request (tests drive them). @default true */
  schedule?: boolean;
  /** Certificates; default: loaded from config.tlsDir. */
  tls?: CertBundle;
}

const RELATIONSHIP_ID = /^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$/;

function globMatch(glob: string, name: string): boolean {
  const re = new RegExp(`^${glob.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'i');
  return re.test(name);
}

export class Agent {
  readonly config: AgentConfig;
  readonly hv: FilesHypervisor;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #tls: CertBundle;
  readonly #runtimes = new Map<string, VmRuntime>();
  readonly #primaries = new Map<string, PrimaryReplication>();
  readonly #replicas = new Map<string, ReplicaReplication>();
  readonly #links = new Map<string, HttpReplicaLink>();
  readonly #azureLinks = new Map<string, AzureBlobLink>();
  readonly #keys = new Map<string, RelationshipKeys>();
  readonly #groupLoops = new Set<string>();
  readonly #abort = new AbortController();
  readonly #loops: Promise<void>[] = [];
  readonly #schedule: boolean;
  #server: MtlsServer | undefined;

  private constructor(config: AgentConfig, tls: CertBundle, opts: AgentOptions) {
    this.config = config;
    this.hv = new FilesHypervisor(join(config.dataDir, 'vms'));
    this.#clock = opts.clock ?? systemClock;
    this.#log = opts.log ?? stderrLogger;
    this.#tls = tls;
    this.#schedule = opts.schedule ?? true;
  }

  static async start(config: AgentConfig, opts: AgentOptions = {}): Promise<Agent> {
    const tls = opts.tls ?? (await loadCertBundle(config.tlsDir, config.name));
    const agent = new Agent(config, tls, opts);
    await agent.#load();
    await agent.#listen();
    return agent;
  }

  /** https URL the agent listens on. */
  get url(): string {
    const port = this.#server?.port ?? this.config.listen.port;
    const host = this.config.listen.host.includes(':') ? `[${this.config.listen.host}]` : this.config.listen.host;
    return `https://${host}:${port}`;
  }

  get nbdDir(): string {
    return join(this.config.dataDir, 'nbd');
  }

  // ------------------------------------------------------------------------------- start and stop

  async #load(): Promise<void> {
    await mkdir(this.config.dataDir, { recursive: true });
    for (const vm of await this.hv.list()) {
      // VMs running on overlays of a recovery point are served below, with their replica.
      if (vm.disks.some((d) => d.file.endsWith('.overlay'))) continue;
      this.#runtimes.set(vm.name, await VmRuntime.start(this.hv, vm, this.nbdDir, this.#log));
    }
    // Control records of replicas; their data lives under the storage paths (by default <dataDir>/replicas).
    const repDir = join(this.config.dataDir, 'replica-records');
    for (const id of await readdir(repDir).catch(() => [] as string[])) {
      const record = await readJsonIfExists<ReplicaRecord>(join(repDir, id, 'state.json'));
      const keys = await this.#readKeys(join(repDir, id));
      if (!record || !keys) continue;
      const rep = await ReplicaReplication.open(join(repDir, id), record, keys, this.#clock, this.#log);
      this.#replicas.set(id, rep);
      // VMs running on overlays of a recovery point come back on the same overlays.
      for (const active of [record.testFailover, record.failover]) {
        if (!active || record.committed) continue;
        const vm = await this.hv.find(active.vm);
        if (vm) this.#runtimes.set(vm.name, await VmRuntime.serve(vm, await rep.openOverlays(active.sequence, this.hv.vmDir(vm.name)), this.nbdDir, this.#log));
      }
    }
    const relDir = join(this.config.dataDir, 'relationships');
    for (const id of await readdir(relDir).catch(() => [] as string[])) {
      const record = await readJsonIfExists<PrimaryRecord>(join(relDir, id, 'state.json'));
      const keys = await this.#readKeys(join(relDir, id));
      if (!record || !keys) continue;
      const forwarded = record.forwardOf ? this.#replicas.get(record.forwardOf) : undefined;
      if (record.forwardOf && !forwarded) {
        this.#log.warn('extended relationship without its replica: skipped', { relationship: id, replica: record.forwardOf });
        continue;
      }
      const p = this.#primary(record, keys, forwarded && (await forwarded.openForward()));
      const lost = this.#runtimes.get(record.vm)?.lostContinuity() ?? [];
      if (lost.length) await p.markContinuityLost(`disks ${lost.join(', ')} were not closed cleanly (agent stopped without a clean cut)`);
    }
  }

  async #listen(): Promise<void> {
    const router = this.#routes();
    this.#server = await createMtlsServer(
      {
        ca: this.#tls.ca,
        cert: this.#tls.cert,
        key: this.#tls.key,
        host: this.config.listen.host,
        port: this.config.listen.port,
        log: this.#log,
      },
      (req, res, peer) => this.#handle(router, req, res, peer),
    );
  }

  /** Stops cleanly: the trackers are closed, so continuity is kept for the next start. */
  async stop(): Promise<void> {
    this.#abort.abort(new Error('agent stopping'));
    await this.#server?.close();
    await Promise.allSettled(this.#loops);
    for (const l of this.#links.values()) l.close();
    for (const r of this.#replicas.values()) await r.close();
    for (const rt of this.#runtimes.values()) await rt.stop();
  }

  // --------------------------------------------------------------------------------- relationships

  async #readKeys(dir: string): Promise<RelationshipKeys | undefined> {
    const k = await readJsonIfExists<{ encryptionKey: string; macKey: string }>(join(dir, 'keys.json'));
    return k && { encryptionKey: Buffer.from(k.encryptionKey, 'base64'), macKey: Buffer.from(k.macKey, 'base64') };
  }

  async #writeKeys(dir: string, keys: RelationshipKeys): Promise<void> {
    await writeJsonAtomic(join(dir, 'keys.json'), {
      encryptionKey: keys.encryptionKey.toString('base64'),
      macKey: keys.macKey.toString('base64'),
    });
  }

  /** The link to a replica: its agent over mutual TLS, or an Azure container (one per site). */
  #linkTo(replica: PrimaryRecord['replica']): ReplicaLink {
    if (!replica.azure) return this.#link(replica.endpoint);
    let link = this.#azureLinks.get(replica.name);
    if (!link) {
      const site: Site = { apiVersion: 'drsite.dev/v1', kind: 'Site', metadata: { name: replica.name }, spec: replica.azure };
      link = azureLinkFromSite(site, process.env, { keys: (id) => this.#keys.get(id), clock: this.#clock, log: this.#log, primary: this.config.name });
      this.#azureLinks.set(replica.name, link);
    }
    return link;
  }

  #link(endpoint: string): HttpReplicaLink {
    let link = this.#links.get(endpoint);
    if (!link) {
      link = new HttpReplicaLink(endpoint, this.#tls);
      this.#links.set(endpoint, link);
    }
    return link;
  }

  #primary(record: PrimaryRecord, keys: RelationshipKeys, source?: CutSource): PrimaryReplication {
    if (record.forwardOf && !source) throw new TerminalError('invalid-state', `extended relationship ${record.id} needs its replica ${record.forwardOf}`);
    const rt = source ? undefined : this.#runtimes.get(record.vm);
    if (!source && !rt) throw new TerminalError('not-found', `VM ${record.vm} of relationship ${record.id} not found on ${this.config.name}`);
    const disks = source
      ? []
      : record.disks.map((d) => {
          const t = rt!.disks.get(d.id);
          if (!t) throw new TerminalError('not-found', `disk ${d.id} of VM ${record.vm} not found`);
          return t;
        });
    this.#keys.set(record.id, keys);
    const p = new PrimaryReplication({
      dir: join(this.config.dataDir, 'relationships', record.id),
      record,
      keys,
      source: source ?? (record.replicationGroup ? groupMemberSource(disks) : vmSource(disks)),
      link: this.#linkTo(record.replica),
      clock: this.#clock,
      log: this.#log,
    });
    this.#primaries.set(record.id, p);
    if (this.#schedule) {
      const group = record.replicationGroup;
      if (!group) this.#loops.push(this.#runSchedule(p));
      else if (!this.#groupLoops.has(group)) {
        this.#groupLoops.add(group);
        this.#loops.push(this.#runGroupSchedule(group));
      }
    }
    return p;
  }

  /** The level-triggered shipping loop of one relationship: a cycle each period, or at the retry time after a failure. */
  async #runSchedule(p: PrimaryReplication): Promise<void> {
    const signal = this.#abort.signal;
    let last = this.#clock.now();
    while (!signal.aborted && this.#primaries.get(p.id) === p) {
      const due = p.nextRetryAt ?? last + p.frequencyMs;
      try {
        await this.#clock.sleep(Math.max(0, due - this.#clock.now()), signal);
      } catch {
        return;
      }
      if (signal.aborted || this.#primaries.get(p.id) !== p) return;
      last = this.#clock.now();
      await p.cycle().catch(() => {}); // recorded by the relationship (retry schedule, health)
    }
  }

  #members(group: string): PrimaryReplication[] {
    return [...this.#primaries.values()].filter((p) => p.record.replicationGroup === group).sort((x, y) => (x.id < y.id ? -1 : 1));
  }

  /**
   * One cycle of a multi-VM consistency group: every member's disks are cut at one instant under
   * one cutId, then each member seals and ships its part. Members that cannot use their part
   * (initial copy, resync, suspended) give it back, so its blocks ship in a later group cut.
   */
  async cycleGroup(group: string): Promise<Record<string, CycleResult | { error: unknown }>> {
    const members = this.#members(group);
    const ready = members.filter((m) => m.state === 'Replicating');
    const out: Record<string, CycleResult | { error: unknown }> = {};
    if (ready.length) {
      const cut = await cutGroup(
        ready.map((m) => ({ vm: m.record.vm, disks: (m.source.tracked ?? []) as TrackedDisk[] })),
        { cutId: randomUUID(), time: this.#clock.now() },
      );
      for (const m of ready) (m.source as GroupMemberSource).stage(cut.vms.get(m.record.vm)!);
    }
    for (const m of members) {
      try {
        out[m.id] = await m.cycle({ force: true });
      } catch (e) {
        out[m.id] = { error: e };
      } finally {
        await (m.source as GroupMemberSource).unstage();
      }
    }
    return out;
  }

  async #runGroupSchedule(group: string): Promise<void> {
    const signal = this.#abort.signal;
    let last = this.#clock.now();
    while (!signal.aborted) {
      const members = this.#members(group);
      if (!members.length) return;
      const period = Math.min(...members.map((m) => m.frequencyMs));
      const retry = members.map((m) => m.nextRetryAt).filter((t): t is number => t !== undefined);
      const due = retry.length ? Math.min(...retry) : last + period;
      try {
        await this.#clock.sleep(Math.max(0, due - this.#clock.now()), signal);
      } catch {
        return;
      }
      last = this.#clock.now();
      await this.cycleGroup(group).catch(() => {});
    }
  }

  async createRelationship(req: CreateRelationshipRequest & { seedFromVm?: string; discardSeed?: boolean }): Promise<RelationshipView> {
    if (!RELATIONSHIP_ID.test(req.id ?? '')) throw new TerminalError('invalid-argument', `relationship id ${JSON.stringify(req.id)} is not valid`);
    const existing = this.#primaries.get(req.id);
    if (existing) {
      if (existing.record.vm !== req.vm || existing.record.replica.name !== req.replica.name) {
        throw new TerminalError('invalid-state', `relationship ${req.id} already exists for VM ${existing.record.vm} → ${existing.record.replica.name}`);
      }
      return existing.view(); // idempotent: the same request again changes nothing
    }
    for (const p of this.#primaries.values()) {
      if (p.record.vm === req.vm) throw new TerminalError('invalid-state', `VM ${req.vm} is already protected by relationship ${p.id}`);
    }
    const rt = this.#runtimes.get(req.vm);
    if (!rt) throw new TerminalError('not-found', `VM ${req.vm} not found on ${this.config.name}`);
    const exclude = new Set(req.excludeDisks ?? []);
    const disks = rt.vm.disks.filter((d) => !exclude.has(d.name)).map((d) => ({ id: d.name, size: d.size }));
    if (!disks.length) throw new TerminalError('invalid-argument', `VM ${req.vm}: every disk is excluded`);
    const keys: RelationshipKeys = { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
    this.#keys.set(req.id, keys);
    const link = this.#linkTo(req.replica);
    await link.createReplica({
      id: req.id,
      vm: req.vm,
      disks,
      keys: { encryptionKey: keys.encryptionKey.toString('base64'), macKey: keys.macKey.toString('base64') },
      retention: retentionOf(req.policy),
      ...(req.replicaStoragePath && { storagePath: req.replicaStoragePath }),
      ...(req.seedFromVm && { seedFromVm: req.seedFromVm }),
      ...(req.discardSeed && { discardSeed: true }),
    });
    const dir = join(this.config.dataDir, 'relationships', req.id);
    await mkdir(dir, { recursive: true });
    await this.#writeKeys(dir, keys);
    const record = newPrimaryRecord({
      id: req.id,
      vm: req.vm,
      replica: req.replica,
      policy: req.policy,
      excludeDisks: [...exclude],
      disks,
      ...(req.replicaStoragePath && { replicaStoragePath: req.replicaStoragePath }),
      ...(req.replicationGroup && { replicationGroup: req.replicationGroup }),
    });
    const p = this.#primary(record, keys);
    await p.save();
    this.#log.info('relationship created', { relationship: req.id, vm: req.vm, replica: req.replica.name });
    return p.view();
  }

  primary(id: string): PrimaryReplication {
    const p = this.#primaries.get(id);
    if (!p) throw new TerminalError('not-found', `no relationship ${id} with this host as primary (${this.config.name})`);
    return p;
  }

  replica(id: string): ReplicaReplication {
    const r = this.#replicas.get(id);
    if (!r) throw new TerminalError('not-found', `no relationship ${id} with this host as replica (${this.config.name})`);
    return r;
  }

  relationships(): RelationshipView[] {
    const now = this.#clock.now();
    return [...[...this.#primaries.values()].map((p) => p.view()), ...[...this.#replicas.values()].map((r) => r.view(now))].sort((a, b) =>
      a.id < b.id ? -1 : a.id > b.id ? 1 : a.role < b.role ? -1 : 1,
    );
  }

  async removeRelationship(id: string): Promise<void> {
    const p = this.#primaries.get(id);
    const r = this.#replicas.get(id);
    if (!p && !r) throw new TerminalError('not-found', `no relationship ${id} on ${this.config.name}`);
    if (p) {
      this.#primaries.delete(id);
      await p.remove({ replicaToo: true });
    }
    if (r) {
      this.#replicas.delete(id);
      await r.remove();
    }
  }

  // ------------------------------------------------------------------------------ replica server

  /**
   * Hyper-V's "allow replication from the specified servers", checked on every request of a
   * primary (not only when a replica is created), so removing an entry takes effect at once.
   */
  #authorizePrimary(peer: PeerIdentity): { storagePath: string; trustGroup: string } {
    const rs = this.config.replicaServer;
    if (!rs.enabled) throw new TerminalError('authorization', `${this.config.name} is not a Replica server`);
    const decision = authorizePeer(
      rs.allowedPrimaries.map((a) => ({ server: a.server, storagePath: a.storagePath ?? rs.defaultStoragePath, trustGroup: a.trustGroup ?? 'default' })),
      peer,
    );
    if (!decision.allowed) {
      this.#log.warn('replication refused: peer is not an allowed primary server', { peer: peer.commonName, fingerprint: peer.fingerprint256, reason: decision.reason });
      throw new TerminalError('authorization', decision.reason);
    }
    return decision;
  }

  async createReplica(req: CreateReplicaRequest, peer: PeerIdentity): Promise<ReplicaReplication> {
    const rs = this.config.replicaServer;
    const decision = this.#authorizePrimary(peer);
    if (!RELATIONSHIP_ID.test(req.id ?? '')) throw new TerminalError('invalid-argument', `relationship id ${JSON.stringify(req.id)} is not valid`);
    const existing = this.#replicas.get(req.id);
    if (existing) {
      if (existing.record.primary !== peer.commonName) throw new TerminalError('authorization', `relationship ${req.id} belongs to another primary`);
      return existing;
    }
    const storageRoot = req.storagePath ?? decision.storagePath ?? rs.defaultStoragePath;
    if (req.seedFromVm) await this.#seedReplica(req.seedFromVm, join(storageRoot, req.id), req.disks, req.discardSeed !== true);
    const dir = join(this.config.dataDir, 'replica-records', req.id);
    await mkdir(dir, { recursive: true });
    const keys: RelationshipKeys = { encryptionKey: Buffer.from(req.keys.encryptionKey, 'base64'), macKey: Buffer.from(req.keys.macKey, 'base64') };
    if (keys.encryptionKey.length !== 32 || keys.macKey.length !== 32) throw new TerminalError('invalid-argument', 'relationship keys must be 32 bytes each');
    await this.#writeKeys(dir, keys);
    const record: ReplicaRecord = {
      id: req.id,
      role: 'Replica',
      vm: req.vm,
      primary: peer.commonName,
      storagePath: join(storageRoot, req.id),
      ...(decision.trustGroup && { trustGroup: decision.trustGroup }),
      disks: req.disks,
      retention: req.retention,
      state: 'ReadyForInitialReplication',
      integrityErrors: 0,
    };
    const r = await ReplicaReplication.open(dir, record, keys, this.#clock, this.#log);
    await r.save();
    this.#replicas.set(req.id, r);
    this.#log.info('replica created', { relationship: req.id, vm: req.vm, primary: peer.commonName, storagePath: record.storagePath });
    return r;
  }

  /**
   * Reverse replication: the former primary's own copy of the VM becomes the replica's starting
   * image (the VM must be off), so the new primary ships only blocks that differ. Its old primary
   * relationship for the VM ends here; the VM itself now exists only as a replica.
   */
  async #seedReplica(vmName: string, storageDir: string, disks: CreateReplicaRequest['disks'], useDisks: boolean): Promise<void> {
    const vm = await this.hv.find(vmName);
    if (!vm) return; // nothing to seed from: a full compare against zeroes
    if (vm.power !== 'Off') throw new TerminalError('invalid-state', `VM ${vmName} is running on ${this.config.name}: shut it down before reverse replication`);
    for (const p of [...this.#primaries.values()].filter((x) => x.record.vm === vmName)) {
      this.#primaries.delete(p.id);
      await p.remove({ replicaToo: false });
    }
    for (const r of [...this.#replicas.values()].filter((x) => x.record.failover?.vm === vmName)) {
      this.#replicas.delete(r.id);
      await r.remove();
    }
    await this.#runtimes.get(vmName)?.stop();
    this.#runtimes.delete(vmName);
    await mkdir(storageDir, { recursive: true });
    for (const d of useDisks ? disks : []) {
      const disk = vm.disks.find((x) => x.name === d.id);
      if (!disk) continue;
      const from = this.hv.diskPath(vmName, disk);
      const to = join(storageDir, `${d.id}.img`);
      await rename(from, to).catch(async (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EXDEV') throw e;
        await copyFile(from, to);
      });
    }
    await this.hv.remove(vmName);
    this.#log.info('replica seeded from the former primary VM', { vm: vmName, storage: storageDir });
  }

  // ------------------------------------------------------------------------------------ failover

  #adapters(req: { adapters?: FailoverAdapterSettings[]; network?: string | null }): VmAdapter[] {
    const list = req.adapters?.length ? req.adapters : [{ name: 'eth0' }];
    return list.map((a) => {
      const network = a.network === undefined ? req.network : a.network;
      return { name: a.name, ...(network ? { network } : {}), ...(a.ipv4 && { ipv4: a.ipv4 }), ...(a.ipv6 && { ipv6: a.ipv6 }) };
    });
  }

  /** Creates `name` on this host running on overlays of the replica's point `sequence`. */
  async #overlayVm(rep: ReplicaReplication, name: string, sequence: number, kind: 'test' | 'failover', adapters: VmAdapter[], power: 'Running' | 'Off'): Promise<VmRuntime> {
    if (await this.hv.find(name)) throw new TerminalError('invalid-state', `a VM named ${name} already exists on ${this.config.name}`);
    const dir = this.hv.vmDir(name);
    await mkdir(dir, { recursive: true });
    let devices: Map<string, ClosableDevice> | undefined;
    try {
      devices = await rep.openOverlays(sequence, dir);
      const vm: VmDefinition = {
        name,
        disks: rep.record.disks.map((d) => ({ name: d.id, file: `${d.id}.overlay`, size: d.size })),
        adapters,
        power,
        origin: { relationshipId: rep.id, recoveryPoint: sequence, kind },
      };
      await this.hv.save(vm);
      const rt = await VmRuntime.serve(vm, devices, this.nbdDir, this.#log);
      this.#runtimes.set(name, rt);
      return rt;
    } catch (e) {
      if (devices) for (const d of devices.values()) await d.close().catch(() => {});
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  async #dropVm(name: string): Promise<void> {
    await this.#runtimes.get(name)?.stop();
    this.#runtimes.delete(name);
    await this.hv.remove(name);
  }

  /** Test failover: `<vm>-Test` from a chosen point on a throw-away overlay; replication keeps running. */
  async testFailover(id: string, req: TestFailoverRequest): Promise<TestFailoverResult> {
    const rep = this.replica(id);
    if (rep.record.testFailover) throw new TerminalError('invalid-state', `a test failover of ${rep.record.vm} is already active (${rep.record.testFailover.vm}); clean it up first`);
    if (rep.record.committed) throw new TerminalError('invalid-state', `replica of ${rep.record.vm} was committed after a failover: no recovery points left to test`);
    const point = rep.resolvePoint(req.recoveryPoint);
    const name = `${rep.record.vm}-Test`;
    const rt = await this.#overlayVm(rep, name, point.sequence, 'test', this.#adapters({ ...req, network: req.network ?? null }), 'Running');
    rep.record.testFailover = { vm: name, sequence: point.sequence };
    await rep.save();
    this.#log.info('test failover', { relationship: id, vm: name, point: point.sequence });
    return { testVm: name, recoveryPoint: rep.pointInfo(point), nbdSocket: rt.socketPath };
  }

  async cleanupTestFailover(id: string): Promise<{ removed: string[] }> {
    const rep = this.replica(id);
    const active = rep.record.testFailover;
    if (!active) throw new TerminalError('invalid-state', `no test failover of ${rep.record.vm} is active`);
    await this.#dropVm(active.vm);
    delete rep.record.testFailover;
    await rep.save();
    return { removed: [active.vm] };
  }

  async preparePlannedFailover(id: string): Promise<{ sequence: number; state: string }> {
    const p = this.primary(id);
    const vm = await this.hv.get(p.record.vm);
    if (vm.power !== 'Off') throw new TerminalError('invalid-state', `VM ${vm.name} is running: shut it down before a planned failover`);
    return p.preparePlannedFailover();
  }

  /** Failover (planned or unplanned) to a point; the same call again before commit changes the point. */
  async failover(id: string, req: FailoverRequest): Promise<FailoverResult> {
    const rep = this.replica(id);
    const state = rep.record.state;
    if (state === 'FailedOver') throw new TerminalError('invalid-state', `replica of ${rep.record.vm} is already failed over and committed`);
    if (state === 'ReadyForInitialReplication' || state === 'WaitingForInitialReplicationImport') {
      throw new TerminalError('invalid-state', `replica of ${rep.record.vm} has no complete copy yet (${state})`);
    }
    const point = rep.resolvePoint(req.recoveryPoint);
    if (rep.record.failover) await this.#dropVm(rep.record.failover.vm); // change of point before commit
    await this.#overlayVm(rep, rep.record.vm, point.sequence, 'failover', this.#adapters(req), req.start === false ? 'Off' : 'Running');
    rep.record.failover = { vm: rep.record.vm, sequence: point.sequence };
    rep.record.state = 'FailoverWaitingCompletion';
    await rep.save();
    this.#log.info('failover', { relationship: id, vm: rep.record.vm, point: point.sequence });
    return { vm: rep.record.vm, recoveryPoint: rep.pointInfo(point), state: rep.record.state };
  }

  /** Commit: the failed-over VM gets standalone disks; the other recovery points are discarded. */
  async commit(id: string): Promise<RelationshipView> {
    const rep = this.replica(id);
    const active = rep.record.failover;
    if (rep.record.state !== 'FailoverWaitingCompletion' || !active) throw new TerminalError('invalid-state', `cannot commit ${rep.record.vm}: no failover is waiting for completion (${rep.record.state})`);
    const rt = this.#runtimes.get(active.vm);
    const vm = await this.hv.get(active.vm);
    const dir = this.hv.vmDir(active.vm);
    for (const d of vm.disks) {
      const dev = rt?.devices.get(d.name);
      if (!dev) throw new TerminalError('invalid-state', `failed-over VM ${active.vm} has no running disk ${d.name}`);
      await materialize(dev, join(dir, `${d.name}.img.tmp`));
    }
    await rt?.stop();
    for (const d of vm.disks) {
      await rename(join(dir, `${d.name}.img.tmp`), join(dir, `${d.name}.img`));
      await rm(join(dir, `${d.name}.overlay`), { force: true });
      await rm(join(dir, `${d.name}.overlay.map`), { force: true });
    }
    const committed: VmDefinition = { ...vm, disks: vm.disks.map((d) => ({ ...d, file: `${d.name}.img` })) };
    await this.hv.save(committed);
    await rep.discardChain();
    this.#runtimes.set(committed.name, await VmRuntime.start(this.hv, committed, this.nbdDir, this.#log));
    return rep.view(this.#clock.now());
  }

  /**
   * Failback from Azure, first half (this host is the relationship's primary, its VM is off): each
   * disk gets what the Azure VM left in its page blob, downloading only the blocks that differ
   * (minimize-downtime) or everything (full-download). Nothing ships to Azure here: the failover
   * marker there still refuses changes until the Azure site ends the failover.
   */
  async failbackFromAzure(id: string, req: FailbackFromAzureRequest): Promise<FailbackFromAzureResult> {
    const p = this.primary(id);
    const link = this.#linkTo(p.record.replica);
    if (!(link instanceof AzureBlobLink)) throw new TerminalError('invalid-argument', `relationship ${id} replicates to ${p.record.replica.name}, not to Azure`);
    const vm = await this.hv.get(p.record.vm);
    if (vm.power !== 'Off') throw new TerminalError('invalid-state', `VM ${vm.name} is running on ${this.config.name}: shut it down before failing back onto its disks`);
    const method = req.method ?? 'minimize-downtime';
    if (method !== 'minimize-downtime' && method !== 'full-download') throw new TerminalError('invalid-argument', `failback method "${String(method)}" is not minimize-downtime or full-download`);
    const rt = this.#runtimes.get(vm.name);
    const out: FailbackFromAzureResult = { method, bytesDownloaded: 0, diskBytes: 0, disks: [] };
    for (const d of p.source.disks) {
      const disk = vm.disks.find((x) => x.name === d.id);
      if (!disk) throw new TerminalError('not-found', `VM ${vm.name} has no disk ${d.id} any more`);
      // Through the running runtime's device when there is one, so nothing it caches goes stale.
      const target = rt?.devices.get(d.id) ?? this.hv.diskPath(vm.name, disk);
      const r = await failbackFromAzure({ link, relationshipId: id, diskId: d.id, snapshot: 'current', target, method, keys: this.#keys.get(id)! });
      out.bytesDownloaded += r.bytesDownloaded;
      out.diskBytes += r.diskSize;
      out.disks.push({ id: d.id, bytesDownloaded: r.bytesDownloaded, blocksChanged: r.blocksChanged, compare: r.compare });
    }
    this.#log.info('failback from Azure downloaded', { relationship: id, vm: vm.name, method, bytes: out.bytesDownloaded, of: out.diskBytes });
    return out;
  }

  /**
   * Failback from Azure, second half (after the Azure site ended the failover): replication to
   * Azure starts again from this host. The disks now equal the page blobs, so the resync it runs
   * compares keyed digests with the last recovery point and ships only the blocks the Azure VM
   * changed, which also brings the blobs' digests up to date.
   */
  async replicateToAzure(id: string): Promise<RelationshipView> {
    const p = this.primary(id);
    if (!(this.#linkTo(p.record.replica) instanceof AzureBlobLink)) throw new TerminalError('invalid-argument', `relationship ${id} replicates to ${p.record.replica.name}, not to Azure`);
    if (p.state === 'PreparedForPlannedFailover') await p.cancelPrepared();
    if (p.state === 'Critical') await p.resume();
    await p.requestResync();
    return p.view();
  }

  /** Cancel: on the replica, the failed-over VM is discarded and replication resumes; on the primary, a prepared planned failover is undone. */
  async cancel(id: string): Promise<RelationshipView> {
    const rep = this.#replicas.get(id);
    if (rep?.record.state === 'FailoverWaitingCompletion' && rep.record.failover) {
      await this.#dropVm(rep.record.failover.vm);
      delete rep.record.failover;
      rep.record.state = 'Replicating';
      await rep.save();
      return rep.view(this.#clock.now());
    }
    const p = this.#primaries.get(id);
    if (p?.state === 'PreparedForPlannedFailover') {
      await p.cancelPrepared();
      return p.view();
    }
    throw new TerminalError('invalid-state', `nothing to cancel for ${id} on ${this.config.name}: no failover waiting for completion or prepared`);
  }

  /** Reverse replication from this host (which runs the failed-over VM) back to the former primary. */
  async reverse(id: string, req: ReverseRequest): Promise<RelationshipView> {
    const rep = this.replica(id);
    if (rep.record.state === 'FailoverWaitingCompletion') await this.commit(id);
    if (rep.record.state !== 'FailedOver') throw new TerminalError('invalid-state', `cannot reverse ${rep.record.vm}: it is not failed over (${rep.record.state})`);
    const full = req.method === 'full-download';
    const view = await this.createRelationship({
      id: req.id,
      vm: rep.record.vm,
      replica: req.replica,
      policy: { ...req.policy, initialReplication: { method: full ? 'network' : 'existing-replica', startAt: 'immediately' } },
      seedFromVm: rep.record.vm,
      ...(full && { discardSeed: true }),
    });
    this.#replicas.delete(id);
    await rep.remove();
    if (req.start !== false) {
      const p = this.primary(req.id);
      await p.startInitial();
      return p.view();
    }
    return view;
  }

  /**
   * Extended replication: this Replica server forwards what it applies for `id` to a third site,
   * with its own policy (5 or 15 minutes: Hyper-V does not extend at 30 s).
   */
  async extend(id: string, req: ReverseRequest): Promise<RelationshipView> {
    const rep = this.replica(id);
    if (req.policy.frequency === '30s') throw new TerminalError('invalid-argument', 'extended replication runs every 5m or 15m, not 30s');
    if (rep.store.applied === 0) throw new RetryableError('busy', `replica ${id} has no complete point yet: extended replication starts after the initial replication`);
    if (rep.record.extendedBy && rep.record.extendedBy !== req.id) throw new TerminalError('invalid-state', `replica ${id} is already extended by ${rep.record.extendedBy}`);
    const existing = this.#primaries.get(req.id);
    if (existing) return existing.view();
    const keys: RelationshipKeys = { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
    this.#keys.set(req.id, keys);
    const link = this.#linkTo(req.replica);
    await link.createReplica({
      id: req.id,
      vm: rep.record.vm,
      disks: rep.record.disks,
      keys: { encryptionKey: keys.encryptionKey.toString('base64'), macKey: keys.macKey.toString('base64') },
      retention: retentionOf(req.policy),
    });
    const dir = join(this.config.dataDir, 'relationships', req.id);
    await mkdir(dir, { recursive: true });
    await this.#writeKeys(dir, keys);
    const record = newPrimaryRecord({ id: req.id, vm: rep.record.vm, replica: req.replica, policy: req.policy, excludeDisks: [], disks: rep.record.disks, forwardOf: id });
    const p = this.#primary(record, keys, await rep.openForward());
    await p.save();
    rep.record.extendedBy = req.id;
    await rep.save();
    if (req.start !== false) await p.startInitial();
    return p.view();
  }

  /** A replica's calls must come from the primary that created it. */
  #ownReplica(id: string, peer: string): ReplicaReplication {
    const r = this.replica(id);
    if (r.record.primary !== peer) throw new TerminalError('authorization', `relationship ${id} belongs to primary ${r.record.primary}, not ${peer}`);
    return r;
  }

  // ------------------------------------------------------------------------------------------ VMs

  async createVm(req: CreateVmRequest): Promise<unknown> {
    const vm = await this.hv.create({
      name: req.name,
      disks: req.disks,
      adapters: req.adapters ?? [],
      power: req.power ?? 'Running',
    });
    this.#runtimes.set(vm.name, await VmRuntime.start(this.hv, vm, this.nbdDir, this.#log));
    return vm;
  }

  // --------------------------------------------------------------------------------------- routes

  async #handle(router: Router, req: IncomingMessage, res: ServerResponse, peer: PeerIdentity): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://agent');
    const found = router.match(req.method ?? 'GET', url.pathname);
    try {
      if ('error' in found) {
        throw new TerminalError(found.error === 404 ? 'not-found' : 'invalid-argument', `${req.method} ${url.pathname}: ${found.error === 404 ? 'no such path' : 'method not allowed'}`);
      }
      const { route, params } = found;
      if (route.caller === 'operator' && !this.config.operators.some((g) => globMatch(g, peer.commonName))) {
        this.#log.warn('refused: not an operator of this agent', { peer: peer.commonName, fingerprint: peer.fingerprint256, path: url.pathname });
        throw new TerminalError('authorization', `${peer.commonName} may not manage ${this.config.name}`);
      }
      if (route.caller === 'primary') this.#authorizePrimary(peer);
      const body = await route.handler({ req, res, params, query: url.searchParams, peer: peer.commonName, identity: peer });
      if (body !== undefined && !res.headersSent) {
        const text = JSON.stringify(body);
        res.writeHead(route.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      }
    } catch (e) {
      if (!isRecoverable(e) && !TerminalError.is(e)) this.#log.error('request failed', { path: url.pathname, error: (e as Error).stack });
      if (!res.headersSent) sendError(res, e);
      else res.destroy();
    }
  }

  #routes(): Router {
    const r = new Router();
    const json = <T>(ctx: RouteContext) => readJson(ctx.req, 1 << 20) as Promise<T>;
    const seq = (ctx: RouteContext) => {
      const n = Number(ctx.params.seq);
      if (!Number.isSafeInteger(n) || n < 1) throw new TerminalError('invalid-argument', `bad sequence ${ctx.params.seq}`);
      return n;
    };
    r.add('GET', API.health, 'operator', async () => ({
      name: this.config.name,
      replicaServer: this.config.replicaServer.enabled,
      vms: this.#runtimes.size,
      relationships: this.#primaries.size + this.#replicas.size,
    }));
    // VMs (the `files` hypervisor)
    r.add('GET', API.vms, 'operator', async () =>
      [...this.#runtimes.values()].map((rt) => ({ ...rt.vm, nbdSocket: rt.socketPath })),
    );
    r.add('POST', API.vms, 'operator', async (ctx) => this.createVm(await json<CreateVmRequest>(ctx)), 201);
    r.add('GET', '/v1/vms/:name', 'operator', async (ctx) => {
      const rt = this.#runtimes.get(ctx.params.name);
      if (!rt) throw new TerminalError('not-found', `VM ${ctx.params.name} not found on ${this.config.name}`);
      return { ...(await this.hv.get(ctx.params.name)), nbdSocket: rt.socketPath };
    });
    r.add('POST', '/v1/vms/:name/power', 'operator', async (ctx) => {
      const { power } = await json<{ power: 'Running' | 'Off' }>(ctx);
      if (power !== 'Running' && power !== 'Off') throw new TerminalError('invalid-argument', 'power must be Running or Off');
      const vm = await this.hv.setPower(ctx.params.name, power);
      const rt = this.#runtimes.get(vm.name);
      if (rt) Object.assign(rt.vm, { power });
      return vm;
    });
    // The replication service (primary side, and views of both sides)
    r.add('GET', API.relationships, 'operator', async () => this.relationships());
    r.add('POST', API.relationships, 'operator', async (ctx) => this.createRelationship(await json<CreateRelationshipRequest>(ctx)), 201);
    r.add('GET', '/v1/relationships/:id', 'operator', async (ctx) => {
      const views = this.relationships().filter((v) => v.id === ctx.params.id);
      if (!views.length) throw new TerminalError('not-found', `no relationship ${ctx.params.id} on ${this.config.name}`);
      return views.length === 1 ? views[0] : views.find((v) => v.role === 'Primary');
    });
    r.add('DELETE', '/v1/relationships/:id', 'operator', async (ctx) => {
      await this.removeRelationship(ctx.params.id);
      return { removed: ctx.params.id };
    });
    r.add('POST', '/v1/relationships/:id/start', 'operator', async (ctx) => {
      const p = this.primary(ctx.params.id);
      const run = p.startInitial();
      if (ctx.query.get('wait') === 'true') await run;
      else run.catch(() => {}); // recorded by the relationship; status shows progress
      return p.view();
    }, 202);
    r.add('POST', '/v1/relationships/:id/replicate-now', 'operator', async (ctx) => {
      const p = this.primary(ctx.params.id);
      const group = p.record.replicationGroup;
      if (!group) return p.cycle({ force: true });
      const results = await this.cycleGroup(group);
      const mine = results[p.id];
      if (mine && 'error' in mine) throw mine.error;
      return mine;
    });
    r.add('POST', '/v1/replication-groups/:group/replicate-now', 'operator', async (ctx) =>
      Object.fromEntries(Object.entries(await this.cycleGroup(ctx.params.group)).map(([id, r]) => [id, 'error' in r ? { error: (r.error as Error).message } : r])),
    );
    r.add('POST', '/v1/relationships/:id/resync', 'operator', async (ctx) => this.primary(ctx.params.id).requestResync());
    r.add('PUT', '/v1/relationships/:id/settings', 'operator', async (ctx) => {
      const { policy } = await json<{ policy: ReplicationPolicySpec }>(ctx);
      await this.primary(ctx.params.id).modify(policy);
      return this.primary(ctx.params.id).view();
    });
    r.add('POST', '/v1/relationships/:id/suspend', 'operator', async (ctx) => {
      await this.primary(ctx.params.id).suspend('operator');
      return this.primary(ctx.params.id).view();
    });
    r.add('POST', '/v1/relationships/:id/resume', 'operator', async (ctx) => {
      await this.primary(ctx.params.id).resume();
      return this.primary(ctx.params.id).view();
    });
    r.add('GET', '/v1/relationships/:id/statistics', 'operator', async (ctx) => {
      const view = this.relationships().find((v) => v.id === ctx.params.id);
      if (!view) throw new TerminalError('not-found', `no relationship ${ctx.params.id} on ${this.config.name}`);
      return view.statistics;
    });
    r.add('POST', '/v1/relationships/:id/statistics/reset', 'operator', async (ctx) => {
      const p = this.primary(ctx.params.id);
      p.resetStatistics();
      await p.save();
      return p.view().statistics;
    });
    r.add('GET', '/v1/relationships/:id/recovery-points', 'operator', async (ctx) => this.replica(ctx.params.id).points());
    r.add('GET', '/v1/relationships/:id/recovery-points/:seq/disks/:disk/sha256', 'operator', async (ctx) => ({
      sha256: await this.replica(ctx.params.id).pointDigest(seq(ctx), ctx.params.disk),
    }));
    r.add('POST', '/v1/relationships/:id/import', 'operator', async (ctx) => {
      const { folder } = await json<{ folder: string }>(ctx);
      return this.replica(ctx.params.id).importMedia(join(folder, ctx.params.id));
    });
    // Failover family
    r.add('POST', '/v1/relationships/:id/test-failover', 'operator', async (ctx) => this.testFailover(ctx.params.id, await json<TestFailoverRequest>(ctx)));
    r.add('POST', '/v1/relationships/:id/cleanup-test-failover', 'operator', async (ctx) => this.cleanupTestFailover(ctx.params.id));
    r.add('POST', '/v1/relationships/:id/prepare-planned-failover', 'operator', async (ctx) => this.preparePlannedFailover(ctx.params.id));
    r.add('POST', '/v1/relationships/:id/failover', 'operator', async (ctx) => this.failover(ctx.params.id, await json<FailoverRequest>(ctx)));
    r.add('POST', '/v1/relationships/:id/commit', 'operator', async (ctx) => this.commit(ctx.params.id));
    r.add('POST', '/v1/relationships/:id/cancel', 'operator', async (ctx) => this.cancel(ctx.params.id));
    r.add('POST', '/v1/relationships/:id/failback-from-azure', 'operator', async (ctx) => this.failbackFromAzure(ctx.params.id, await json<FailbackFromAzureRequest>(ctx)));
    r.add('POST', '/v1/relationships/:id/replicate-to-azure', 'operator', async (ctx) => this.replicateToAzure(ctx.params.id));
    r.add('POST', '/v1/relationships/:id/move-storage', 'operator', async (ctx) => {
      const { path } = await json<{ path: string }>(ctx);
      if (typeof path !== 'string' || !path.startsWith('/')) throw new TerminalError('invalid-argument', 'path must be an absolute directory');
      const rep = this.replica(ctx.params.id);
      await rep.moveStorage(path);
      return rep.view(this.#clock.now());
    });
    r.add('POST', '/v1/relationships/:id/extend', 'operator', async (ctx) => this.extend(ctx.params.id, await json<ReverseRequest>(ctx)));
    r.add('POST', '/v1/relationships/:id/reverse', 'operator', async (ctx) => this.reverse(ctx.params.id, await json<ReverseRequest>(ctx)));
    // Replica server: called by primaries
    r.add('POST', API.replicaRelationships, 'primary', async (ctx) => {
      return (await this.createReplica(await json<CreateReplicaRequest>(ctx), ctx.identity)).status();
    }, 201);
    r.add('GET', '/v1/replica/relationships/:id', 'primary', async (ctx) => this.#ownReplica(ctx.params.id, ctx.peer).status());
    r.add('DELETE', '/v1/replica/relationships/:id', 'primary', async (ctx) => {
      const rep = this.#ownReplica(ctx.params.id, ctx.peer);
      this.#replicas.delete(rep.id);
      await rep.remove();
      return { removed: rep.id };
    });
    const upload = async (ctx: RouteContext) => {
      const rep = this.#ownReplica(ctx.params.id, ctx.peer);
      rep.acceptingLogs(); // refuse before taking any data
      const n = seq(ctx);
      await handleUpload(ctx.req, ctx.res, {
        dir: join(rep.dir, 'uploads'),
        name: `${n}.${ctx.params.disk}`,
        onComplete: (path) => rep.receive(ctx.params.disk, n, path),
      });
      return undefined;
    };
    r.add('PUT', '/v1/replica/relationships/:id/logs/:seq/:disk', 'primary', upload);
    r.add('HEAD', '/v1/replica/relationships/:id/logs/:seq/:disk', 'primary', upload);
    r.add('POST', '/v1/replica/relationships/:id/apply', 'primary', async (ctx) => this.#ownReplica(ctx.params.id, ctx.peer).apply());
    r.add('POST', '/v1/replica/relationships/:id/discard-pending', 'primary', async (ctx) => this.#ownReplica(ctx.params.id, ctx.peer).discardPending());
    r.add('GET', '/v1/replica/relationships/:id/disks/:disk/checksums', 'primary', async (ctx) =>
      digestsToJSON(await this.#ownReplica(ctx.params.id, ctx.peer).checksums(ctx.params.disk)),
    );
    // The multi-level compare (64 KiB, then 4 KiB inside differing blocks) with short keyed digests.
    r.add('POST', '/v1/replica/relationships/:id/disks/:disk/checksums', 'primary', async (ctx) =>
      digestsToJSON(await this.#ownReplica(ctx.params.id, ctx.peer).checksums(ctx.params.disk, compareRequestFromJSON(await json(ctx)))),
    );
    r.add('PUT', '/v1/replica/relationships/:id/settings', 'primary', async (ctx) => {
      const { retention } = await json<{ retention: ReplicaRecord['retention'] }>(ctx);
      await this.#ownReplica(ctx.params.id, ctx.peer).setRetention(retention);
      return { ok: true };
    });
    return r;
  }
}

/** Writes a device's whole content as a sparse raw image (all-zero chunks are skipped). */
async function materialize(dev: ClosableDevice, path: string): Promise<void> {
  const CHUNK = 4 << 20;
  const zero = Buffer.alloc(CHUNK);
  const fh = await open(path, 'w', 0o644);
  try {
    await fh.truncate(dev.size);
    for (let at = 0; at < dev.size; at += CHUNK) {
      const buf = await dev.read(at, Math.min(CHUNK, dev.size - at));
      if (!buf.equals(zero.subarray(0, buf.length))) await fh.write(buf, 0, buf.length, at);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

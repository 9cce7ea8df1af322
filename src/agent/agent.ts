// The per-host daemon: serves its VMs' disks over NBD through the change tracker, runs the
// primary side of its relationships on the policy's schedule, acts as a Replica server for the
// primaries it accepts, and answers the replication-service API over HTTPS with mutual TLS.
// This file holds the lifecycle and the shared state; the verbs live beside it (relationships,
// failover, scheduler) and the API in routes.ts.
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readJsonIfExists } from '../core/atomic-file.ts';
import { guestHealthReason, withHealthReasons, type HealthReason } from '../core/replication/health.ts';
import type { RelationshipKeys } from '../core/types.ts';
import { systemClock, type Clock } from '../model/clock.ts';
import { TerminalError, isRecoverable } from '../model/errors.ts';
import type { Site } from '../model/types.generated.ts';
import type { RelationshipView } from '../transport/agent-api.ts';
import { loadCertBundle, type CertBundle } from '../transport/certs.ts';
import { sendError } from '../transport/http-errors.ts';
import { stderrLogger, type Logger } from '../transport/logger.ts';
import { createMtlsServer, type MtlsServer } from '../transport/mtls.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import { authorizeOperator, authorizePrimary } from './authorization.ts';
import type { AgentConfig } from './config.ts';
import type { AgentContext } from './context.ts';
import type { Hypervisor } from '../model/hypervisor.ts';
import { hypervisorFor } from './hypervisor/index.ts';
import type { VmRuntime } from './hypervisor/vm-runtime.ts';
import { readAtRestKey, readKeys } from './keys.ts';
import { AzureBlobLink, azureLinkFromSite } from '../azure/blob-link.ts';
import { HttpReplicaLink } from './links/https.ts';
import { groupMemberSource, quiescedSource, vmSource, type CutSource, type Quiescer, type ReplicaLink } from '../core/replication/ports.ts';
import { guestAgentQuiescer } from './hypervisor/qemu/guest-agent.ts';
import { PrimaryReplication } from '../core/replication/primary.ts';
import type { PrimaryRecord } from '../core/replication/primary-record.ts';
import { ReplicaReplication, type ReplicaRecord } from '../core/replication/replica.ts';
import { agentRoutes } from './routes.ts';
import type { Router } from './router.ts';
import { Scheduler } from './scheduler.ts';
import { serveOverlays, serveVm } from './vms.ts';
import { readoptAll, type AdoptedVm } from './adopted.ts';

export interface AgentOptions {
  clock?: Clock;
  log?: Logger;
  /** Run cycles on the policy schedule. Off, cycles run only on request (tests drive them). @default true */
  schedule?: boolean;
  /** Certificates; default: loaded from config.tlsDir. */
  tls?: CertBundle;
}

export class Agent implements AgentContext {
  readonly config: AgentConfig;
  readonly hv: Hypervisor;
  readonly clock: Clock;
  readonly log: Logger;
  readonly runtimes = new Map<string, VmRuntime>();
  readonly adopted = new Map<string, AdoptedVm>();
  readonly primaries = new Map<string, PrimaryReplication>();
  readonly replicas = new Map<string, ReplicaReplication>();
  readonly keys = new Map<string, RelationshipKeys>();
  readonly #tls: CertBundle;
  readonly #links = new Map<string, HttpReplicaLink>();
  readonly #azureLinks = new Map<string, AzureBlobLink>();
  readonly #abort = new AbortController();
  readonly #scheduler: Scheduler | undefined;
  #server: MtlsServer | undefined;

  private constructor(config: AgentConfig, tls: CertBundle, opts: AgentOptions) {
    this.config = config;
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? stderrLogger;
    const log = this.log;
    this.hv = hypervisorFor(config.hypervisor, join(config.dataDir, 'vms'), config.qemu, {
      log,
      onStopped: (vm, s) => (s.crashed ? log.warn('guest stopped without being asked', { vm, message: s.crashed.message }) : log.info('guest powered off', { vm })),
    }, config.libvirt);
    this.#tls = tls;
    this.#scheduler = opts.schedule ?? true ? new Scheduler(this, this.#abort.signal) : undefined;
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
    return this.hv.socketDir ?? join(this.config.dataDir, 'nbd');
  }

  // ------------------------------------------------------------------------------- start and stop

  async #load(): Promise<void> {
    await mkdir(this.config.dataDir, { recursive: true });
    for (const vm of await this.hv.list()) {
      // VMs running on overlays of a recovery point are served below, with their replica.
      if (vm.disks.some((d) => d.file.endsWith('.overlay'))) continue;
      await serveVm(this, vm);
    }
    // Control records of replicas; their data lives under the storage paths (by default <dataDir>/replicas).
    const repDir = join(this.config.dataDir, 'replica-records');
    for (const id of await readdir(repDir).catch(() => [] as string[])) {
      const record = await readJsonIfExists<ReplicaRecord>(join(repDir, id, 'state.json'));
      const keys = await readKeys(join(repDir, id));
      if (!record || !keys) continue;
      const rep = await ReplicaReplication.open(join(repDir, id), record, keys, await readAtRestKey(join(repDir, id)), this.clock, this.log);
      this.replicas.set(id, rep);
      // VMs running on overlays of a recovery point come back on the same overlays.
      for (const active of [record.testFailover, record.failover]) {
        if (!active || record.committed) continue;
        const vm = await this.hv.find(active.vm);
        if (vm) await serveOverlays(this, vm, await rep.openOverlays(active.sequence, this.hv.vmDir(vm.name)));
      }
    }
    // Real guests that kept running while the agent was down reconnect to the exports served above.
    await this.hv.adopt?.();
    await readoptAll(this);
    const relDir = join(this.config.dataDir, 'relationships');
    for (const id of await readdir(relDir).catch(() => [] as string[])) {
      const record = await readJsonIfExists<PrimaryRecord>(join(relDir, id, 'state.json'));
      const keys = await readKeys(join(relDir, id));
      if (!record || !keys) continue;
      const forwarded = record.forwardOf ? this.replicas.get(record.forwardOf) : undefined;
      if (record.forwardOf && !forwarded) {
        this.log.warn('extended relationship without its replica: skipped', { relationship: id, replica: record.forwardOf });
        continue;
      }
      const adopted = this.adopted.get(record.vm);
      if (!forwarded && !adopted && !this.runtimes.has(record.vm) && (await readJsonIfExists(join(this.config.dataDir, 'adopted', `${record.vm}.json`)))) {
        this.log.warn('relationship of an adopted VM whose QEMU is gone: skipped until it answers again', { relationship: id, vm: record.vm });
        continue;
      }
      const p = this.addPrimary(record, keys, forwarded ? await forwarded.openForward() : adopted?.source);
      const lost = this.runtimes.get(record.vm)?.lostContinuity() ?? [];
      if (lost.length) await p.markContinuityLost(`disks ${lost.join(', ')} were not closed cleanly (agent stopped without a clean cut)`);
      // Checkpoints of a libvirt domain are persistent: the chain goes on across agent restarts.
      if (adopted && !adopted.persistent) await p.markContinuityLost('the agent restarted: the adopted VM\'s dirty bitmaps were added anew, so writes made meanwhile are unknown');
    }
  }

  async #listen(): Promise<void> {
    const router = agentRoutes(this);
    this.#server = await createMtlsServer(
      { ca: this.#tls.ca, cert: this.#tls.cert, key: this.#tls.key, host: this.config.listen.host, port: this.config.listen.port, log: this.log },
      (req, res, peer) => this.#handle(router, req, res, peer),
    );
  }

  /** Stops cleanly: the trackers are closed, so continuity is kept for the next start. */
  async stop(): Promise<void> {
    this.#abort.abort(new Error('agent stopping'));
    await this.#server?.close();
    await this.#scheduler?.stopped();
    for (const l of this.#links.values()) l.close();
    for (const r of this.replicas.values()) await r.close();
    // Real guests keep running: their disk I/O waits for the next agent's exports (NBD reconnect).
    await this.hv.close?.();
    for (const rt of this.runtimes.values()) await rt.stop();
    for (const vm of this.adopted.values()) await vm.source.close().catch(() => {});
  }

  // --------------------------------------------------------------------------------- relationships

  linkTo(replica: PrimaryRecord['replica']): ReplicaLink {
    if (!replica.azure) {
      let link = this.#links.get(replica.endpoint);
      if (!link) {
        link = new HttpReplicaLink(replica.endpoint, this.#tls, this.config.linkTimeoutMs);
        this.#links.set(replica.endpoint, link);
      }
      return link;
    }
    let link = this.#azureLinks.get(replica.name);
    if (!link) {
      const site: Site = { apiVersion: 'drsite.dev/v1', kind: 'Site', metadata: { name: replica.name }, spec: replica.azure };
      link = azureLinkFromSite(site, process.env, { keys: (id) => this.keys.get(id), clock: this.clock, log: this.log, primary: this.config.name });
      this.#azureLinks.set(replica.name, link);
    }
    return link;
  }

  addPrimary(record: PrimaryRecord, keys: RelationshipKeys, source?: CutSource): PrimaryReplication {
    if (record.forwardOf && !source) throw new TerminalError('invalid-state', `extended relationship ${record.id} needs its replica ${record.forwardOf}`);
    const rt = source ? undefined : this.runtimes.get(record.vm);
    if (!source && !rt) throw new TerminalError('not-found', `VM ${record.vm} of relationship ${record.id} not found on ${this.config.name}`);
    const disks = source
      ? []
      : record.disks.map((d) => {
          const t = rt!.disks.get(d.id);
          if (!t) throw new TerminalError('not-found', `disk ${d.id} of VM ${record.vm} not found`);
          return t;
        });
    this.keys.set(record.id, keys);
    const p = new PrimaryReplication({
      dir: join(this.config.dataDir, 'relationships', record.id),
      record,
      keys,
      source: source ?? (record.replicationGroup ? groupMemberSource(disks) : quiescedSource(vmSource(disks), this.#quiescer(record.vm))),
      link: this.linkTo(record.replica),
      clock: this.clock,
      log: this.log,
    });
    this.primaries.set(record.id, p);
    this.#scheduler?.watch(p);
    return p;
  }

  /** How a VM's filesystems are frozen for application-consistent points: its guest agent, if it has a guest. */
  #quiescer(vm: string): Quiescer {
    const hv = this.hv;
    if (hv.guestAgentSocket) return guestAgentQuiescer(() => hv.guestAgentSocket!(vm), vm);
    const why = `VM "${vm}" runs on the ${hv.kind} hypervisor: there is no guest to quiesce`;
    return { freeze: () => Promise.reject(new Error(why)), thaw: () => Promise.resolve() };
  }

  relationships(): RelationshipView[] {
    const now = this.clock.now();
    return [...[...this.primaries.values()].map((p) => p.view()), ...[...this.replicas.values()].map((r) => r.view(now))]
      .map((v) => withHealthReasons(v, this.#guestReasons(v)))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : a.role < b.role ? -1 : 1));
  }

  /**
   * The VMs of a relationship that run on this host (the protected VM here, or the VM a failover or
   * test failover started from its replica) and do not boot.
   */
  #guestReasons(v: RelationshipView): HealthReason[] {
    const liveness = this.hv.liveness?.bind(this.hv);
    if (!liveness) return [];
    const vms = new Set([v.vm, v.failover?.vm, v.testFailover?.vm].filter((n): n is string => n !== undefined && this.runtimes.has(n)));
    return [...vms].map((vm) => guestHealthReason(vm, liveness(vm))).filter((r): r is HealthReason => r !== undefined);
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
      if (route.caller === 'operator') authorizeOperator(this, peer, url.pathname);
      if (route.caller === 'primary') authorizePrimary(this, peer);
      const body = await route.handler({ req, res, params, query: url.searchParams, peer: peer.commonName, identity: peer, body: undefined });
      if (body !== undefined && !res.headersSent) {
        const text = JSON.stringify(body);
        res.writeHead(route.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      }
    } catch (e) {
      if (!isRecoverable(e) && !TerminalError.is(e)) this.log.error('request failed', { path: url.pathname, error: (e as Error).stack });
      if (!res.headersSent) sendError(res, e);
      else res.destroy();
    }
  }
}

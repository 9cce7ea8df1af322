// `drsite controller`: the reconciler of `drsite run`, driven by custom resources instead of files.
// Every replica of the controller keeps list+watch caches of the five kinds; only the holder of
// the Lease opens the sites and the vault and reconciles. Each pass reads the caches, adds
// finalizers, turns the objects into declarations (config/, one model), runs one reconcile pass
// (reconciler/), writes each object's status through the status subresource, announces jobs as
// Events, and lets deleted ProtectedVMs go once their protection is disabled. Passes are level-
// triggered: a watch event only brings the next pass forward; the poll covers what the
// replication engine changes without telling anyone.
import { jittered } from '../model/clock.ts';
import type { DesiredState, Kind } from '../model/desired.ts';
import { KINDS } from '../model/desired.ts';
import { recoverInterrupted, reconcileOnce } from '../reconciler/apply.ts';
import { openSession, type Session } from '../reconciler/session.ts';
import { canonicalJson } from '../vault/canonical-json.ts';
import { namesOf, PROTECTION_FINALIZER, SITE_FINALIZER } from './api-group.ts';
import { declarationsOf, keyOf, participating, sitesInUse, type Declarations } from './declarations.ts';
import { Informer } from './informer.ts';
import { JobEvents } from './job-events.ts';
import { httpStatusOf, KubeApi, type CustomObject } from './kube-api.ts';
import { DEFAULT_LEASE_SECONDS, LeaderElector } from './leader-election.ts';
import { mergePatch, statusFor } from './status.ts';
import type { KubeConfig } from '@kubernetes/client-node';

export interface ControllerOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** Embedded sites, certificates, journals; the vault too unless vaultPath. */
  stateDir: string;
  /** @default `<stateDir>/vault.db` */
  vaultPath?: string;
  /** This replica's name in the Lease. */
  identity: string;
  /** @default drsite-controller */
  leaseName?: string;
  /** @default 15 */
  leaseDurationSeconds?: number;
  /** How often candidates try the Lease and the leader renews it. @default leaseDuration / 5 */
  leaseRetryMs?: number;
  /** Mean time between passes without watch events (jittered +-20%). @default 10000 */
  pollMs?: number;
  report?: (line: string) => void;
}

/**
 * Whether a watch event should bring the next pass forward: a new, deleted or edited object (its
 * generation, finalizers, deletion or labels moved), not the echo of a status the controller wrote.
 */
function specChanged(prev: CustomObject | undefined, next: CustomObject | undefined): boolean {
  if (!prev || !next) return true;
  const m = (o: CustomObject) => [o.metadata.generation, o.metadata.deletionTimestamp, o.metadata.finalizers ?? [], o.metadata.labels ?? {}];
  return canonicalJson(m(prev)) !== canonicalJson(m(next));
}

/** Passes closer together than this are merged (a burst of watch events is one pass). */
const MIN_PASS_GAP_MS = 200;
const MAX_BACKOFF_MS = 30_000;

export class Controller {
  private readonly opts: ControllerOptions;
  private readonly api: KubeApi;
  private readonly informers = new Map<Kind, Informer>();
  private readonly elector: LeaderElector;
  private readonly events: JobEvents;
  private readonly report: (line: string) => void;
  private session: Session | undefined;
  private sitesKey = '';
  private desired: DesiredState | undefined;
  private applied = new Map<string, number>();
  private readonly skipActions = new Set<string>();
  private leading = false;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private looping = false;
  private wake: (() => void) | undefined;
  private dirty = false;
  /** Reconcile passes this controller has completed (as leader). */
  passes = 0;

  constructor(opts: ControllerOptions) {
    this.opts = opts;
    this.report = opts.report ?? (() => {});
    this.api = new KubeApi(opts.kubeConfig, opts.namespace);
    this.events = new JobEvents(this.api, opts.identity);
    for (const kind of KINDS) {
      this.informers.set(kind, new Informer({ api: this.api, plural: namesOf(kind).plural, report: this.report, onChange: (c) => {
        if (specChanged(c.prev, c.next)) this.poke();
      } }));
    }
    this.elector = new LeaderElector({
      api: this.api,
      leaseName: opts.leaseName ?? 'drsite-controller',
      identity: opts.identity,
      ...(opts.leaseDurationSeconds !== undefined && { leaseDurationSeconds: opts.leaseDurationSeconds }),
      ...(opts.leaseRetryMs !== undefined && { retryPeriodMs: opts.leaseRetryMs }),
      report: this.report,
      onStartedLeading: () => {
        this.leading = true;
        // A loop still finishing its pass (leadership lost and won back meanwhile) just goes on.
        if (!this.looping) this.loop = this.runLoop();
      },
      onStoppedLeading: () => {
        this.leading = false;
        this.poke();
      },
    });
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The cache of one kind (what the last list and watch events said). */
  informer(kind: Kind): Informer {
    return this.informers.get(kind)!;
  }

  start(): void {
    for (const i of this.informers.values()) i.start();
    this.elector.start();
  }

  /**
   * Stops after the pass in progress, closes the sites and the vault, then (unless release is
   * false) hands the Lease back so a standby takes over at once rather than after it expires.
   */
  async stop(opts: { releaseLease?: boolean } = {}): Promise<void> {
    this.stopped = true;
    this.poke();
    await this.loop;
    await this.elector.stop({ release: opts.releaseLease !== false });
    await this.loop;
    for (const i of this.informers.values()) i.stop();
  }

  private poke(): void {
    this.dirty = true;
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }

  private async runLoop(): Promise<void> {
    let failures = 0;
    this.looping = true;
    try {
      await Promise.all([...this.informers.values()].map((i) => i.waitSynced()));
      while (this.leading && !this.stopped) {
        this.dirty = false;
        let wait: number;
        try {
          await this.pass();
          this.passes++;
          failures = 0;
          wait = jittered(this.opts.pollMs ?? 10_000);
        } catch (e) {
          failures++;
          wait = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (failures - 1));
          this.report(`pass failed, retrying in ${Math.round(wait / 1000)}s: ${(e as Error).message}`);
        }
        if (!this.leading || this.stopped) break;
        await this.sleep(MIN_PASS_GAP_MS);
        if (!this.dirty) await this.sleep(wait);
      }
    } finally {
      this.wake = undefined;
      await this.closeSession();
      this.looping = false;
      if (this.leading && !this.stopped) this.loop = this.runLoop();
    }
  }

  private async closeSession(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    this.sitesKey = '';
    if (s) await s.close().catch((e: Error) => this.report(`closing the sites: ${e.message}`));
  }

  /** (Re)opens the sites when the declared Sites changed: a site set is fixed while open. */
  private async sessionFor(desired: DesiredState): Promise<Session> {
    const key = canonicalJson(desired.sites);
    if (this.session && key === this.sitesKey) return this.session;
    await this.closeSession();
    this.session = await openSession({
      desired, vaultPath: this.opts.vaultPath ?? `${this.opts.stateDir}/vault.db`, stateDir: this.opts.stateDir, report: this.report,
      command: `drsite controller (${this.opts.identity})`,
      // A previous leader in this state directory may still be finishing its last pass.
      waitLockMs: (this.opts.leaseDurationSeconds ?? DEFAULT_LEASE_SECONDS) * 1000,
      onLeaseLost: () => {
        this.report('the vault was taken over by another drsite; stepping down');
        this.leading = false;
        this.poke();
      },
    });
    this.sitesKey = key;
    recoverInterrupted(this.session.vault);
    return this.session;
  }

  private objects(): Map<Kind, CustomObject[]> {
    return new Map(KINDS.map((k) => [k, this.informer(k).items()]));
  }

  private find = (kind: string, name: string): CustomObject | undefined => this.informers.get(kind as Kind)?.get(name);

  /** Merge-patches metadata.finalizers, guarded by the resourceVersion read (409: next pass). */
  private async setFinalizers(o: CustomObject, finalizers: string[]): Promise<void> {
    const plural = namesOf(o.kind as Kind).plural;
    try {
      const updated = await this.api.patch(plural, o.metadata.name, { metadata: { finalizers, resourceVersion: o.metadata.resourceVersion } });
      this.informer(o.kind as Kind).update(updated);
    } catch (e) {
      if (httpStatusOf(e) === 409 || httpStatusOf(e) === 404) return;
      throw e;
    }
  }

  private async addFinalizers(objects: Map<Kind, CustomObject[]>): Promise<void> {
    for (const [kind, finalizer] of [['ProtectedVM', PROTECTION_FINALIZER], ['Site', SITE_FINALIZER]] as const) {
      for (const o of objects.get(kind) ?? []) {
        const has = o.metadata.finalizers ?? [];
        if (o.metadata.deletionTimestamp === undefined && !has.includes(finalizer)) await this.setFinalizers(o, [...has, finalizer]);
      }
    }
  }

  private async pass(): Promise<void> {
    await this.addFinalizers(this.objects());
    const objects = this.objects();
    const decl = declarationsOf(participating({ byKind: objects }));
    let notApplied: string | undefined;
    if (decl.result.ok) {
      this.desired = decl.result.state;
      this.applied = decl.generations;
    } else {
      const errors = decl.result.diagnostics.filter((d) => d.severity === 'error').length;
      notApplied = `the declarations in namespace ${this.opts.namespace} do not load (${errors} error(s), see the objects whose Accepted condition says Invalid); ${this.desired ? 'the controller keeps acting on the previous ones' : 'nothing is reconciled until they do'}`;
      if (decl.diagnostics.size === 0) for (const d of decl.result.diagnostics) this.report(`${d.summary}: ${d.detail ?? ''}`);
    }
    let relationships: Record<string, { managed: boolean }> | undefined;
    if (this.desired) {
      const session = await this.sessionFor(this.desired);
      if (!this.leading || this.stopped) return;
      const r = await reconcileOnce({ desired: this.desired, sites: session.sites, vault: session.vault, stateDir: session.stateDir, report: this.report, skipActions: this.skipActions });
      relationships = r.observation.observed.relationships;
    }
    if (!this.leading || this.stopped) return;
    await this.writeStatuses(this.objects(), decl, notApplied);
    if (this.session) await this.events.emit(this.session.vault, this.find);
    await this.releaseFinalizers(this.objects(), relationships);
  }

  private async writeStatuses(objects: Map<Kind, CustomObject[]>, decl: Declarations, notApplied: string | undefined): Promise<void> {
    const now = Date.now();
    for (const list of objects.values()) {
      for (const o of list) {
        const key = keyOf(o);
        const applied = this.applied.get(key);
        const status = statusFor(o, {
          vault: this.session?.vault,
          diagnostics: decl.diagnostics.get(key) ?? [],
          appliedGeneration: applied,
          ...(notApplied && { notApplied }),
          now,
        });
        const patch = mergePatch(o.status ?? {}, status);
        if (patch === undefined) continue;
        try {
          this.informer(o.kind as Kind).update(await this.api.patchStatus(namesOf(o.kind as Kind).plural, o.metadata.name, patch));
        } catch (e) {
          if (httpStatusOf(e) !== 404) throw e; // deleted meanwhile
        }
      }
    }
  }

  /**
   * A ProtectedVM being deleted goes once the sites report no relationship for it (protection
   * disabled, or never enabled) or one drsite did not create (never removed by drsite). A Site
   * being deleted goes once no ProtectedVM refers to it any more.
   */
  private async releaseFinalizers(objects: Map<Kind, CustomObject[]>, relationships: Record<string, { managed: boolean }> | undefined): Promise<void> {
    const without = (o: CustomObject, f: string) => (o.metadata.finalizers ?? []).filter((x) => x !== f);
    const desiredNames = new Set(this.desired?.protectedVms.map((p) => p.metadata.name) ?? []);
    for (const p of objects.get('ProtectedVM') ?? []) {
      if (p.metadata.deletionTimestamp === undefined || !p.metadata.finalizers?.includes(PROTECTION_FINALIZER)) continue;
      if (!relationships || desiredNames.has(p.metadata.name)) continue; // not acted on yet
      const rel = relationships[p.metadata.name];
      if (rel && rel.managed) continue;
      this.report(`ProtectedVM ${p.metadata.name}: protection disabled; removing finalizer ${PROTECTION_FINALIZER}`);
      await this.setFinalizers(p, without(p, PROTECTION_FINALIZER));
    }
    const used = sitesInUse((this.objects().get('ProtectedVM') ?? []).filter((p) => p.metadata.deletionTimestamp === undefined || p.metadata.finalizers?.includes(PROTECTION_FINALIZER)));
    for (const s of objects.get('Site') ?? []) {
      if (s.metadata.deletionTimestamp === undefined || !s.metadata.finalizers?.includes(SITE_FINALIZER) || used.has(s.metadata.name)) continue;
      await this.setFinalizers(s, without(s, SITE_FINALIZER));
    }
  }
}

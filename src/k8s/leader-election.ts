// Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it:
// the holder renews spec.renewTime every retry period; a candidate takes the Lease over only
// when it has seen the same record unchanged for a whole leaseDurationSeconds (expiry measured
// on the candidate's own clock from when it last saw the record change, so clock skew between
// machines does not matter). Every write carries the resourceVersion read, so of two candidates
// racing for an expired Lease exactly one wins (the other gets 409 Conflict).
import { V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import type { KubeApi } from './kube-api.ts';
import { httpStatusOf } from './kube-api.ts';

/** How long a leader that stopped renewing keeps the Lease when none is given (client-go's default). */
export const DEFAULT_LEASE_SECONDS = 15;

export interface LeaderElectionOptions {
  api: KubeApi;
  leaseName: string;
  identity: string;
  /** @default 15 */
  leaseDurationSeconds?: number;
  /** How often to try to acquire or renew. @default leaseDuration / 5 */
  retryPeriodMs?: number;
  /** The leader gives up when it could not renew for this long. @default 2/3 of the lease duration */
  renewDeadlineMs?: number;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  report?: (line: string) => void;
}

export class LeaderElector {
  private readonly opts: LeaderElectionOptions;
  private readonly durationMs: number;
  private leading = false;
  private stopped = true;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** The record last read and when (local clock) it last changed. */
  private observed: { key: string; at: number } | undefined;
  private lastRenew = 0;

  constructor(opts: LeaderElectionOptions) {
    this.opts = opts;
    this.durationMs = (opts.leaseDurationSeconds ?? DEFAULT_LEASE_SECONDS) * 1000;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  private get retryMs(): number {
    return this.opts.retryPeriodMs ?? Math.max(200, Math.floor(this.durationMs / 5));
  }

  start(): void {
    this.stopped = false;
    this.tick();
  }

  private tick(): void {
    if (this.stopped) return;
    this.running = this.tryAcquireOrRenew().catch((e: Error) => this.opts.report?.(`leader election: ${e.message}`)).finally(() => {
      this.running = undefined;
      if (this.leading && Date.now() - this.lastRenew > (this.opts.renewDeadlineMs ?? (this.durationMs * 2) / 3)) {
        this.opts.report?.(`could not renew lease ${this.opts.leaseName} in time; stepping down`);
        this.setLeading(false);
      }
      if (!this.stopped) {
        this.timer = setTimeout(() => this.tick(), this.retryMs);
        this.timer.unref();
      }
    });
  }

  private setLeading(on: boolean): void {
    if (this.leading === on) return;
    this.leading = on;
    if (on) this.opts.onStartedLeading();
    else this.opts.onStoppedLeading();
  }

  private spec(now: Date, prev: V1Lease['spec'] | undefined, takeover: boolean): NonNullable<V1Lease['spec']> {
    const micro = new V1MicroTime(now.getTime());
    return {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: this.durationMs / 1000,
      acquireTime: takeover || !prev?.acquireTime ? micro : prev.acquireTime,
      renewTime: micro,
      leaseTransitions: (prev?.leaseTransitions ?? 0) + (takeover && prev?.holderIdentity ? 1 : 0),
    };
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const { api, leaseName: name, identity } = this.opts;
    const now = new Date();
    const lease = await api.readLease(name);
    if (!lease) {
      try {
        await api.createLease({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace: api.namespace }, spec: this.spec(now, undefined, true) });
      } catch (e) {
        if (httpStatusOf(e) === 409) return; // another candidate created it first
        throw e;
      }
      this.won(now, 'created');
      return;
    }
    const spec = lease.spec ?? {};
    const key = JSON.stringify([spec.holderIdentity, String(spec.renewTime), spec.leaseDurationSeconds, lease.metadata?.resourceVersion]);
    if (this.observed?.key !== key) this.observed = { key, at: Date.now() };
    const holder = spec.holderIdentity ?? '';
    const mine = holder === identity;
    const durationMs = (spec.leaseDurationSeconds ?? this.durationMs / 1000) * 1000;
    const expired = holder === '' || this.observed.at + durationMs < Date.now();
    if (!mine && !expired) {
      if (this.leading) {
        this.opts.report?.(`lease ${name} is now held by ${holder}; stepping down`);
        this.setLeading(false);
      }
      return;
    }
    try {
      await api.replaceLease({ ...lease, spec: this.spec(now, spec, !mine) });
    } catch (e) {
      if (httpStatusOf(e) === 409) return; // changed since we read it: try again next period
      throw e;
    }
    this.won(now, mine ? 'renewed' : `took over from ${holder || 'nobody'}`);
  }

  private won(now: Date, how: string): void {
    this.lastRenew = now.getTime();
    if (!this.leading) this.opts.report?.(`leader (lease ${this.opts.leaseName} ${how}) as ${this.opts.identity}`);
    this.setLeading(true);
  }

  /**
   * Stops campaigning. With release (the default) a leader hands the Lease back at once (holder
   * cleared), as client-go's ReleaseOnCancel does, so a successor need not wait for expiry.
   */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    const wasLeading = this.leading;
    this.setLeading(false);
    if (!wasLeading || opts.release === false) return;
    try {
      const lease = await this.opts.api.readLease(this.opts.leaseName);
      if (lease?.spec?.holderIdentity !== this.opts.identity) return;
      const now = new V1MicroTime(Date.now());
      await this.opts.api.replaceLease({ ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: now } });
    } catch (e) {
      this.opts.report?.(`releasing lease ${this.opts.leaseName}: ${(e as Error).message}`);
    }
  }
}

// Everything a reconciling command holds open: the vault, the sites (embedded agents started here),
// and whatever the command runs beside them (the demo's sample workload). One place opens and
// closes them in order.
import { resolve } from 'node:path';
import { systemClock, type Clock } from '../model/clock.ts';
import type { DesiredState } from '../model/desired.ts';
import { openSites, type SiteSet } from '../sites/open-sites.ts';
import { Vault } from '../vault/vault.ts';
import { observeSites } from './observe-sites.ts';
import { holdReconcileLease, type HeldLease } from './reconcile-lease.ts';
import { recordObservation } from './record-status.ts';

export interface SessionOptions {
  desired: DesiredState;
  vaultPath: string;
  stateDir: string;
  certsDir?: string;
  /**
   * Started once the sites are open (the CLI passes the demo's sample workload here); stopped
   * before the final cycle of quiesce() and before the sites close.
   */
  companion?: (sites: SiteSet) => Promise<Companion | undefined>;
  report?: (line: string) => void;
  /** What this process runs, shown to a second one that finds the reconcile lease taken. */
  command: string;
  /** How long to wait for another drsite reconciling the same vault. @default 0 (refuse) */
  waitLockMs?: number;
  /** The reconcile lease was taken over while this session ran (it must stop acting). */
  onLeaseLost?: () => void;
  /** How long the reconcile lease outlives its last renewal. @default 30000 */
  leaseTtlMs?: number;
  /** Time for the lease wait and the observations. @default systemClock */
  clock?: Clock;
}

/** Something that runs beside the reconciler for the session's lifetime. */
export interface Companion {
  stop(): Promise<void>;
}

export interface Session {
  desired: DesiredState;
  vault: Vault;
  sites: SiteSet;
  stateDir: string;
  /** Stops the companion, then ships one last cycle so every replica equals its primary. */
  quiesce(): Promise<void>;
  close(): Promise<void>;
}

export async function openSession(opts: SessionOptions): Promise<Session> {
  const stateDir = resolve(opts.stateDir);
  const vault = Vault.open(opts.vaultPath);
  const clock = opts.clock ?? systemClock;
  // The lease comes before the sites: a second reconciler must not even start embedded agents.
  let lease: HeldLease;
  try {
    lease = await holdReconcileLease({
      vault, command: opts.command, ...(opts.waitLockMs !== undefined && { waitMs: opts.waitLockMs }), ...(opts.leaseTtlMs !== undefined && { ttlMs: opts.leaseTtlMs }),
      ...(opts.report && { report: opts.report }), ...(opts.onLeaseLost && { onLost: opts.onLeaseLost }), clock,
    });
  } catch (e) {
    vault.close();
    throw e;
  }
  let sites: SiteSet;
  try {
    sites = await openSites(opts.desired, { stateDir, ...(opts.certsDir && { certsDir: opts.certsDir }) });
  } catch (e) {
    lease.release();
    vault.close();
    throw e;
  }
  let companion: Companion | undefined;
  try {
    companion = await opts.companion?.(sites);
  } catch (e) {
    await sites.close();
    lease.release();
    vault.close();
    throw e;
  }
  const session: Session = {
    desired: opts.desired,
    vault,
    sites,
    stateDir,
    async quiesce() {
      await companion?.stop();
      const obs = await observeSites(opts.desired, sites, vault, new Date(clock.now()));
      for (const [name, cur] of obs.current) {
        if (cur.primaryView?.state !== 'Replicating') continue;
        await sites.get(cur.primarySite).replicateNow(cur.id).catch((e: Error) => opts.report?.(`final cycle of ${name}: ${e.message}`));
      }
      recordObservation(vault, opts.desired, await observeSites(opts.desired, sites, vault, new Date(clock.now())));
    },
    async close() {
      await companion?.stop();
      await sites.close();
      lease.release();
      vault.close();
    },
  };
  return session;
}

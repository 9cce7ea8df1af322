// One reconciler per vault: `apply`, `run` and the imperative verbs hold the vault's `reconcile`
// lease while they act on the sites, so two of them never plan and run the same steps at once.
// The lease is renewed while held and released on exit; a holder killed with SIGKILL leaves a
// lease that the next process takes over at once on the same host (its pid is gone), or after
// it expires from anywhere else.
import { hostname } from 'node:os';
import { systemClock, type Clock } from '../model/clock.ts';
import { TerminalError } from '../model/errors.ts';
import { parseDuration } from '../model/units.ts';
import type { Lease, LeaseHolder, Vault } from '../vault/vault.ts';
import { pidAlive } from '../sites/open-sites.ts';

export const RECONCILE_LEASE = 'reconcile';

/**
 * What `drsite run` records as its lease's command, followed by ` --poll <duration>`: a command
 * refused the lease by a running loop tells the operator the loop will act, and how soon.
 */
export const LOOP_COMMAND = 'drsite run';

export interface ReconcileLeaseOptions {
  vault: Vault;
  /** What this process runs, shown to the others, e.g. `drsite apply`. */
  command: string;
  /**
   * How long to wait for another holder to finish. Infinity: stand by until the holder's lease
   * lapses (a follower controller). @default 0 (refuse at once)
   */
  waitMs?: number;
  /** Renewed every third of it. @default 30000 */
  ttlMs?: number;
  report?: (line: string) => void;
  /** Called once if the lease is found taken over (this process stalled past its expiry). */
  onLost?: (by: Lease | undefined) => void;
  /** Time for the wait's deadline and retries. @default systemClock */
  clock?: Clock;
}

export interface HeldLease {
  release(): void;
}

const RETRY_MS = 200;

const describe = (h: Lease) => `pid ${h.pid}${h.host === hostname() ? '' : ` on ${h.host}`}, \`${h.command}\`, since ${h.acquiredAt}`;

/** Why `command` may not reconcile now; a running loop is named with what it will do instead. */
function refusal(h: Lease, command: string, vaultPath: string): string {
  const loop = h.command === LOOP_COMMAND || /^drsite run --poll \S+$/.test(h.command);
  if (!loop) return `another drsite (${describe(h)}) is reconciling ${vaultPath}; wait for it to finish or stop it, or pass --wait-lock <duration> to wait for it`;
  // A pass starts every poll interval +-20% (src/reconciler/loop.ts), plus a second for the pass itself.
  const pollMs = parseDuration(/--poll (\S+)$/.exec(h.command)?.[1] ?? '') ?? 2000;
  const within = `within ${Math.ceil((pollMs * 1.2) / 1000) + 1}s, after any pass in progress`;
  const holder = `drsite run (pid ${h.pid}, host ${h.host}) holds the reconcile lease for ${vaultPath}`;
  const instead = command.startsWith('drsite apply')
    ? `the running loop will apply this declaration on its next pass (${within}): it re-reads the files it was started with, so edit those and watch its output or \`drsite status\``
    : `the running loop acts only on declarations, which it re-reads on every pass (${within}): declare this there (a failover is a RecoveryPlan's failover: block), or stop the loop (Ctrl-C) and run this again`;
  return `${holder}; ${instead}; or pass --wait-lock <duration> to wait for the loop to exit`;
}

export async function holdReconcileLease(opts: ReconcileLeaseOptions): Promise<HeldLease> {
  const { vault } = opts;
  const ttlMs = opts.ttlMs ?? 30_000;
  const me: LeaseHolder = { pid: process.pid, host: hostname(), command: opts.command };
  const isGone = (h: Lease) => h.host === me.host && !pidAlive(h.pid);
  const clock = opts.clock ?? systemClock;
  const deadline = clock.now() + (opts.waitMs ?? 0);
  let said = false;
  for (;;) {
    const r = vault.takeLease(RECONCILE_LEASE, me, ttlMs, isGone);
    if (r.taken) {
      const gone = vault.backend === 'etcd' ? 'its lease expired' : 'that process is gone';
      if (r.tookOverFrom) opts.report?.(`took over the reconcile lease of ${vault.path} from ${describe(r.tookOverFrom)}: ${gone}`);
      break;
    }
    if (clock.now() >= deadline) throw new TerminalError('invalid-state', refusal(r.holder, opts.command, vault.path));
    if (!said) {
      opts.report?.(
        deadline === Infinity
          ? `standing by: ${describe(r.holder)} leads ${vault.path}; taking over if its lease lapses`
          : `waiting up to ${Math.ceil((deadline - clock.now()) / 1000)}s for the drsite reconciling ${vault.path} (${describe(r.holder)})`,
      );
    }
    said = true;
    await clock.sleep(Math.min(RETRY_MS, Math.max(0, deadline - clock.now())));
  }
  let lost = false;
  const timer = setInterval(() => {
    if (lost || !vault.isOpen) return;
    try {
      if (vault.renewLease(RECONCILE_LEASE, me, ttlMs)) return;
      lost = true;
      opts.report?.(`lost the reconcile lease of ${vault.path} (this process stalled past its expiry and another drsite took over); stopping`);
      opts.onLost?.(vault.getLease(RECONCILE_LEASE));
    } catch (e) {
      // A busy vault delays one renewal; the next one (or the expiry margin) covers it.
      opts.report?.(`renewing the reconcile lease: ${(e as Error).message}`);
    }
  }, Math.max(1000, Math.floor(ttlMs / 3)));
  timer.unref();
  return {
    release() {
      clearInterval(timer);
      if (vault.isOpen) vault.releaseLease(RECONCILE_LEASE, me);
    },
  };
}

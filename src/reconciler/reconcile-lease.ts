// One reconciler per vault: `apply`, `run` and the imperative verbs hold the vault's `reconcile`
// lease while they act on the sites, so two of them never plan and run the same steps at once.
// The lease is renewed while held and released on exit; a holder killed with SIGKILL leaves a
// lease that the next process takes over at once on the same host (its pid is gone), or after
// it expires from anywhere else.
import { hostname } from 'node:os';
import { TerminalError } from '../model/errors.ts';
import type { Lease, LeaseHolder, Vault } from '../vault/vault.ts';
import { pidAlive } from '../sites/open-sites.ts';

export const RECONCILE_LEASE = 'reconcile';

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
}

export interface HeldLease {
  release(): void;
}

const RETRY_MS = 200;

const describe = (h: Lease) => `pid ${h.pid}${h.host === hostname() ? '' : ` on ${h.host}`}, \`${h.command}\`, since ${h.acquiredAt}`;

export async function holdReconcileLease(opts: ReconcileLeaseOptions): Promise<HeldLease> {
  const { vault } = opts;
  const ttlMs = opts.ttlMs ?? 30_000;
  const me: LeaseHolder = { pid: process.pid, host: hostname(), command: opts.command };
  const isGone = (h: Lease) => h.host === me.host && !pidAlive(h.pid);
  const deadline = Date.now() + (opts.waitMs ?? 0);
  let said = false;
  for (;;) {
    const r = vault.takeLease(RECONCILE_LEASE, me, ttlMs, isGone);
    if (r.taken) {
      const gone = vault.backend === 'etcd' ? 'its lease expired' : 'that process is gone';
      if (r.tookOverFrom) opts.report?.(`took over the reconcile lease of ${vault.path} from ${describe(r.tookOverFrom)}: ${gone}`);
      break;
    }
    if (Date.now() >= deadline) {
      throw new TerminalError(
        'invalid-state',
        `another drsite (${describe(r.holder)}) is reconciling ${vault.path}; wait for it to finish or stop it, or pass --wait-lock <duration> to wait for it`,
      );
    }
    if (!said) {
      opts.report?.(
        deadline === Infinity
          ? `standing by: ${describe(r.holder)} leads ${vault.path}; taking over if its lease lapses`
          : `waiting up to ${Math.ceil((deadline - Date.now()) / 1000)}s for the drsite reconciling ${vault.path} (${describe(r.holder)})`,
      );
    }
    said = true;
    await new Promise((res) => setTimeout(res, Math.min(RETRY_MS, Math.max(0, deadline - Date.now()))));
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

// Replication health (Normal / Warning / Critical) from a relationship's facts, with the reasons,
// as Hyper-V Replica shows it: Warning when replication is late or degraded but recovers by
// itself, Critical when only an operator can fix it.
import type { GuestLiveness } from '../../model/hypervisor.ts';
import type { RelationshipView } from '../../model/replication-api.ts';
import type { State } from './replication-state.ts';

export type Health = 'Normal' | 'Warning' | 'Critical';

export type HealthReasonCode =
  | 'critical-state'
  | 'terminal-error'
  | 'behind-schedule'
  | 'missed-cycles'
  | 'retrying'
  | 'resync-required'
  | 'resynchronizing'
  | 'threshold-exceeded'
  | 'suspended'
  | 'app-consistency'
  | 'guest-not-booting';

export interface HealthReason {
  readonly code: HealthReasonCode;
  readonly severity: 'Warning' | 'Critical';
  readonly message: string;
}

export interface HealthFacts {
  readonly state: State;
  readonly now: number;
  /** Replication frequency in milliseconds (30 s, 5 min or 15 min). */
  readonly frequencyMs: number;
  /** End of the last successful cycle (the replica's newest point). */
  readonly lastReplicationTime?: number;
  /** When delta replication began (lag is measured from here before the first cycle). */
  readonly replicatingSince?: number;
  /** Cycle counts over the monitoring window (statistics since their last reset). */
  readonly successfulCycles?: number;
  readonly missedCycles?: number;
  /** A recoverable failure is being retried on the backoff schedule. */
  readonly retrying?: { readonly attempts: number; readonly lastError?: string };
  /** The non-recoverable error that stopped replication, if any. */
  readonly terminalError?: { readonly code: string; readonly message: string };
  readonly pendingBytes?: number;
  readonly diskBytes?: number;
  /** Why the last application-consistent cut the policy asked for did not happen (its points are crash-consistent). */
  readonly appConsistencyError?: string;
  /** Resync threshold (percent of the disk): the policy's, as resolved by the defaults step; absent = no threshold check. */
  readonly thresholdPercent?: number;
}

/** Behind schedule once the newest point is older than this many replication periods. */
export const LAG_PERIODS_WARNING = 2;
/** Hyper-V Replica's rule: Warning when more than 20 % of the cycles in the window were missed. */
export const MISSED_FRACTION_WARNING = 0.2;

/**
 * Rules:
 * - Critical: state Critical, or a terminal error recorded.
 * - Warning, while Replicating: lag (now − last successful cycle) above 2 × frequency, i.e. at
 *   least one whole cycle did not land (one slow cycle still finishes within the next period);
 *   more than 20 % of the window's cycles missed; a recoverable error being retried; pending
 *   changes past the resync threshold.
 * - Warning in ResynchronizationRequired, Resynchronizing and Suspended (replication is not
 *   keeping the replica current), as Hyper-V shows them.
 * - Normal otherwise (including initial replication, failover states and Disabled).
 */
export function assessHealth(f: HealthFacts): { health: Health; reasons: HealthReason[] } {
  const reasons: HealthReason[] = [];
  const warn = (code: HealthReasonCode, message: string) => reasons.push({ code, severity: 'Warning', message });
  const crit = (code: HealthReasonCode, message: string) => reasons.push({ code, severity: 'Critical', message });

  if (f.state === 'Critical') crit('critical-state', 'replication stopped on a non-recoverable error; an operator must act');
  if (f.terminalError) crit('terminal-error', `${f.terminalError.code}: ${f.terminalError.message}`);

  if (f.state === 'ResynchronizationRequired') warn('resync-required', 'resynchronisation is required before replication can continue');
  if (f.state === 'Resynchronizing') warn('resynchronizing', 'resynchronisation in progress; the replica is not current');
  if (f.state === 'Suspended') warn('suspended', 'replication is suspended');

  if (f.state === 'Replicating') {
    const since = f.lastReplicationTime ?? f.replicatingSince;
    if (since !== undefined) {
      const lag = f.now - since;
      if (lag > LAG_PERIODS_WARNING * f.frequencyMs) {
        warn('behind-schedule', `last replication ${Math.round(lag / 1000)} s ago, frequency ${Math.round(f.frequencyMs / 1000)} s`);
      }
    }
    const ok = f.successfulCycles ?? 0;
    const missed = f.missedCycles ?? 0;
    if (missed > 0 && missed / (ok + missed) > MISSED_FRACTION_WARNING) {
      warn('missed-cycles', `${missed} of ${ok + missed} replication cycles missed`);
    }
    const pct = f.thresholdPercent;
    if (pct !== undefined && f.pendingBytes !== undefined && f.diskBytes && f.pendingBytes > (f.diskBytes * pct) / 100) {
      warn('threshold-exceeded', `${f.pendingBytes} bytes pending, over ${pct}% of the ${f.diskBytes}-byte disk`);
    }
  }
  if (f.appConsistencyError && f.state === 'Replicating') {
    warn('app-consistency', `no application-consistent point: ${f.appConsistencyError}; recovery points are crash-consistent until the guest can be quiesced`);
  }
  if (f.retrying && !f.terminalError && f.state !== 'Critical') {
    warn('retrying', `retrying after ${f.retrying.attempts} failed attempt(s)${f.retrying.lastError ? `: ${f.retrying.lastError}` : ''}`);
  }

  const health: Health = reasons.some((r) => r.severity === 'Critical') ? 'Critical' : reasons.length ? 'Warning' : 'Normal';
  return { health, reasons };
}

/**
 * A VM that runs on this host (the primary's, or one a failover or test failover started) but shows
 * no sign of having booted within its boot timeout: Warning, so that Normal means the VM works.
 */
export function guestHealthReason(vm: string, guest: GuestLiveness | undefined): HealthReason | undefined {
  if (guest?.state !== 'not-booting') return undefined;
  return { code: 'guest-not-booting', severity: 'Warning', message: `guest-not-booting: VM "${vm}" runs but shows no boot progress: ${guest.evidence}` };
}

const RANK: Record<Health, number> = { Normal: 0, Warning: 1, Critical: 2 };

/** `view` with `extra` reasons added: its health (and its statistics' health) raised to the worst of them. */
export function withHealthReasons(view: RelationshipView, extra: readonly HealthReason[]): RelationshipView {
  if (extra.length === 0) return view;
  const health = extra.reduce<Health>((w, r) => (RANK[r.severity] > RANK[w] ? r.severity : w), view.health);
  return {
    ...view,
    health,
    healthReasons: [...view.healthReasons, ...extra.map((r) => r.message)],
    statistics: { ...view.statistics, health },
  };
}

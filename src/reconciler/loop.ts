// `drsite run`: the level-triggered loop. Every pass re-observes the world (the replication engine
// changes without telling anyone), so it polls with jitter; a pass that throws is requeued with
// backoff; an action that failed with a TerminalError is recorded once and not retried.
import { setTimeout as sleep } from 'node:timers/promises';
import { recoverInterrupted, reconcileOnce, type PassOptions, type PassResult } from './apply.ts';

export interface LoopOptions extends Omit<PassOptions, 'dryRun' | 'onPlan' | 'skipActions'> {
  /** Stop once converged (every ProtectedVM Replicating/Normal, nothing planned, no plan open). */
  untilConverged?: boolean;
  /** Stop after this long. */
  durationMs?: number;
  signal?: AbortSignal;
  /** Mean poll interval; each wait is this +- 20%. @default 2000 */
  pollMs?: number;
  onPass?: (r: PassResult) => void;
  /**
   * Re-reads the declarations before each pass (GitOps: an edited file takes effect on the next
   * pass); undefined keeps the previous desired state (e.g. the files do not load right now).
   */
  reload?: () => Promise<PassOptions['desired'] | undefined>;
  onError?: (e: unknown, retryInMs: number) => void;
}

export interface LoopResult {
  passes: number;
  converged: boolean;
  stoppedBy: 'converged' | 'duration' | 'signal';
}

const MAX_BACKOFF_MS = 30_000;

export async function runLoop(opts: LoopOptions): Promise<LoopResult> {
  const poll = opts.pollMs ?? 2000;
  const deadline = opts.durationMs === undefined ? Infinity : Date.now() + opts.durationMs;
  const skipActions = new Set<string>();
  recoverInterrupted(opts.vault);
  let passes = 0;
  let converged = false;
  let failures = 0;
  for (;;) {
    if (opts.signal?.aborted) return { passes, converged, stoppedBy: 'signal' };
    let wait: number;
    try {
      const desired = (await opts.reload?.()) ?? opts.desired;
      opts.desired = desired;
      const r = await reconcileOnce({ ...opts, desired, skipActions });
      passes++;
      failures = 0;
      converged = r.converged;
      opts.onPass?.(r);
      if (converged && opts.untilConverged) return { passes, converged, stoppedBy: 'converged' };
      wait = poll * (0.8 + Math.random() * 0.4);
    } catch (e) {
      failures++;
      wait = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (failures - 1)) * (0.8 + Math.random() * 0.4);
      opts.onError?.(e, wait);
    }
    if (Date.now() + wait > deadline) {
      const left = deadline - Date.now();
      if (left > 0) await sleep(left, undefined, { signal: opts.signal }).catch(() => {});
      return { passes, converged, stoppedBy: opts.signal?.aborted ? 'signal' : 'duration' };
    }
    await sleep(wait, undefined, { signal: opts.signal }).catch(() => {});
  }
}

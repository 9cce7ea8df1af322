// `drsite run`: the level-triggered loop. Every pass re-observes the world (the replication engine
// changes without telling anyone), so it polls with jitter; a pass that throws is requeued with
// backoff; an action that failed with a TerminalError is recorded once and not retried.
import { jittered, systemClock } from '../model/clock.ts';
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
  /** Source of the jitter. @default Math.random */
  random?: () => number;
}

export interface LoopResult {
  passes: number;
  converged: boolean;
  stoppedBy: 'converged' | 'duration' | 'signal';
}

const MAX_BACKOFF_MS = 30_000;

export async function runLoop(opts: LoopOptions): Promise<LoopResult> {
  const poll = opts.pollMs ?? 2000;
  const clock = opts.clock ?? systemClock;
  const sleep = (ms: number) => clock.sleep(ms, opts.signal).catch(() => {});
  const deadline = opts.durationMs === undefined ? Infinity : clock.now() + opts.durationMs;
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
      wait = jittered(poll, opts.random);
    } catch (e) {
      failures++;
      wait = jittered(Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (failures - 1)), opts.random);
      opts.onError?.(e, wait);
    }
    if (clock.now() + wait > deadline) {
      const left = deadline - clock.now();
      if (left > 0) await sleep(left);
      return { passes, converged, stoppedBy: opts.signal?.aborted ? 'signal' : 'duration' };
    }
    await sleep(wait);
  }
}

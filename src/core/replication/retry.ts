// The retry schedule of Hyper-V Replica / Site Recovery: after a recoverable failure, retry with
// intervals of 1, 2, 4, 8 and 10 minutes, then every 30 minutes while the error persists; a
// non-recoverable failure is never retried and stays Critical until an operator resets it.
import type { Clock } from '../../model/clock.ts';
import { isRecoverable, TerminalError } from '../../model/errors.ts';

const MINUTE = 60_000;
export const RETRY_DELAYS_MS: readonly number[] = [1, 2, 4, 8, 10].map((m) => m * MINUTE);
export const RETRY_STEADY_MS = 30 * MINUTE;

/** Delay before retry number `attempt` (1 = the first retry after the first failure). */
export function nextRetryDelay(attempt: number): number {
  if (!Number.isInteger(attempt) || attempt < 1) throw new RangeError(`retry attempt must be an integer >= 1, got ${attempt}`);
  return RETRY_DELAYS_MS[attempt - 1] ?? RETRY_STEADY_MS;
}

export type RetryStatus = 'ok' | 'retrying' | 'critical';

export type RetryDecision =
  | { readonly retry: true; readonly attempt: number; readonly delayMs: number; readonly at: number }
  | { readonly retry: false; readonly reason: string };

export interface RetryErrorInfo {
  readonly code?: string;
  readonly message: string;
  readonly at: number;
}

export interface RetryStateJSON {
  status: RetryStatus;
  attempts: number;
  firstFailureAt: number | null;
  nextAttemptAt: number | null;
  lastError: RetryErrorInfo | null;
}

export class RetryState {
  readonly #clock: Clock;
  #status: RetryStatus = 'ok';
  #attempts = 0;
  #firstFailureAt: number | undefined;
  #nextAttemptAt: number | undefined;
  #lastError: RetryErrorInfo | undefined;

  constructor(clock: Clock, saved?: RetryStateJSON) {
    this.#clock = clock;
    if (saved) {
      this.#status = saved.status;
      this.#attempts = saved.attempts;
      this.#firstFailureAt = saved.firstFailureAt ?? undefined;
      this.#nextAttemptAt = saved.nextAttemptAt ?? undefined;
      this.#lastError = saved.lastError ?? undefined;
    }
  }

  get status(): RetryStatus {
    return this.#status;
  }
  /** Consecutive failures since the last success or reset. */
  get attempts(): number {
    return this.#attempts;
  }
  get firstFailureAt(): number | undefined {
    return this.#firstFailureAt;
  }
  get nextAttemptAt(): number | undefined {
    return this.#nextAttemptAt;
  }
  get lastError(): RetryErrorInfo | undefined {
    return this.#lastError;
  }

  /**
   * Records a failure and says whether and when to retry. The decision rests on the error's type
   * only (isRecoverable); once critical, every later failure is refused too.
   */
  failure(error: unknown): RetryDecision {
    const now = this.#clock.now();
    const e = error as { code?: unknown; message?: unknown } | null;
    this.#lastError = {
      ...(typeof e?.code === 'string' ? { code: e.code } : {}),
      message: typeof e?.message === 'string' ? e.message : String(error),
      at: now,
    };
    this.#attempts++;
    this.#firstFailureAt ??= now;
    if (this.#status === 'critical' || !isRecoverable(error)) {
      this.#status = 'critical';
      this.#nextAttemptAt = undefined;
      return { retry: false, reason: `non-recoverable: ${this.#lastError.message}; an operator must reset` };
    }
    this.#status = 'retrying';
    const delayMs = nextRetryDelay(this.#attempts);
    this.#nextAttemptAt = now + delayMs;
    return { retry: true, attempt: this.#attempts, delayMs, at: this.#nextAttemptAt };
  }

  /** A successful attempt ends the backoff. Ignored while critical: only operatorReset clears it. */
  success(): void {
    if (this.#status === 'critical') return;
    this.#clear();
  }

  /** The operator fixed the cause: clears critical and the backoff. */
  operatorReset(): void {
    this.#clear();
  }

  /** May an attempt run now? (Never while critical.) */
  due(): boolean {
    if (this.#status === 'critical') return false;
    return this.#nextAttemptAt === undefined || this.#clock.now() >= this.#nextAttemptAt;
  }

  /** Sleeps on the clock until the next attempt is due (returns at once if it is). */
  async waitUntilDue(signal?: AbortSignal): Promise<void> {
    if (this.#status === 'critical') throw new TerminalError('invalid-state', 'retry state is critical: no attempt becomes due until an operator resets it');
    const wait = (this.#nextAttemptAt ?? 0) - this.#clock.now();
    if (wait > 0) await this.#clock.sleep(wait, signal);
  }

  toJSON(): RetryStateJSON {
    return {
      status: this.#status,
      attempts: this.#attempts,
      firstFailureAt: this.#firstFailureAt ?? null,
      nextAttemptAt: this.#nextAttemptAt ?? null,
      lastError: this.#lastError ?? null,
    };
  }

  #clear(): void {
    this.#status = 'ok';
    this.#attempts = 0;
    this.#firstFailureAt = undefined;
    this.#nextAttemptAt = undefined;
  }
}

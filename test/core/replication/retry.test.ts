// The retry schedule on a ManualClock: 1, 2, 4, 8, 10 minutes then every 30; terminal errors are
// not retried and stay critical until an operator resets.
import { describe, it, expect } from 'vitest';
import { ManualClock } from '../../../src/model/clock.ts';
import { RetryableError, TerminalError } from '../../../src/model/errors.ts';
import { RetryState, nextRetryDelay } from '../../../src/core/replication/retry.ts';

const MIN = 60_000;

describe('retry schedule', () => {
  it('nextRetryDelay: 1, 2, 4, 8, 10, then 30 minutes', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 50].map((a) => nextRetryDelay(a) / MIN)).toEqual([1, 2, 4, 8, 10, 30, 30, 30, 30]);
    expect(() => nextRetryDelay(0)).toThrow(RangeError);
  });

  it('retries a persisting recoverable error on the schedule, measured on the clock', async () => {
    const clock = new ManualClock();
    const start = clock.now();
    const retry = new RetryState(clock);
    const intervals: number[] = [];
    for (let i = 0; i < 8; i++) {
      const failedAt = clock.now();
      const d = retry.failure(new RetryableError('network', 'replica unreachable'));
      expect(d.retry).toBe(true);
      if (!d.retry) return;
      expect(retry.status).toBe('retrying');
      expect(retry.due()).toBe(false);
      await clock.advance(d.delayMs - 1);
      expect(retry.due()).toBe(false);
      await clock.advance(1);
      expect(retry.due()).toBe(true);
      intervals.push((clock.now() - failedAt) / MIN);
    }
    expect(intervals).toEqual([1, 2, 4, 8, 10, 30, 30, 30]);
    expect(retry.firstFailureAt).toBe(start);
    expect(retry.attempts).toBe(8);
    retry.success();
    expect(retry.status).toBe('ok');
    expect(retry.attempts).toBe(0);
    // A new failure after a success starts the schedule again.
    const d = retry.failure(Object.assign(new Error('disk full'), { code: 'ENOSPC' }));
    expect(d.retry && d.delayMs).toBe(MIN);
  });

  it('waitUntilDue sleeps on the clock until the retry time', async () => {
    const clock = new ManualClock();
    const retry = new RetryState(clock);
    retry.failure(new RetryableError('busy', 'replica busy'));
    let woke = false;
    const waiting = retry.waitUntilDue().then(() => (woke = true));
    await clock.advance(MIN / 2);
    expect(woke).toBe(false);
    await clock.advance(MIN / 2);
    await waiting;
    expect(woke).toBe(true);
  });

  it('a non-recoverable error is not retried and stays critical until operatorReset', async () => {
    const clock = new ManualClock();
    const retry = new RetryState(clock);
    retry.failure(new RetryableError('network', 'flaky'));
    const d = retry.failure(new TerminalError('authentication', 'certificate rejected'));
    expect(d).toEqual({ retry: false, reason: 'non-recoverable: certificate rejected; an operator must reset' });
    expect(retry.status).toBe('critical');
    expect(retry.due()).toBe(false);
    expect(retry.lastError).toMatchObject({ code: 'authentication', message: 'certificate rejected' });
    // Neither a later recoverable error nor a success clears it.
    expect(retry.failure(new RetryableError('network', 'x')).retry).toBe(false);
    retry.success();
    expect(retry.status).toBe('critical');
    await expect(retry.waitUntilDue()).rejects.toThrow(/critical/);
    // Unknown errors are terminal: a bug is shown, not looped on.
    const other = new RetryState(clock);
    expect(other.failure(new Error('undefined is not a function')).retry).toBe(false);
    retry.operatorReset();
    expect(retry.status).toBe('ok');
    expect(retry.due()).toBe(true);
    // Survives a restart through JSON.
    const saved = new RetryState(clock);
    saved.failure(new RetryableError('network', 'down'));
    const restored = new RetryState(clock, JSON.parse(JSON.stringify(saved.toJSON())));
    expect(restored.nextAttemptAt).toBe(clock.now() + MIN);
    expect(restored.failure(new RetryableError('network', 'down')).retry && restored.attempts).toBe(2);
  });
});

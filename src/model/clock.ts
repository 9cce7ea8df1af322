// Time as a port, so the engine's schedules (cycles, retry backoff, resync windows) run in
// milliseconds under test.

export interface Clock {
  now(): number;
  /** Resolves after `ms` of this clock's time. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const t = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** A clock that moves only when told to; sleepers wake in deadline order. */
export class ManualClock implements Clock {
  private t: number;
  private sleepers: { at: number; resolve: () => void }[] = [];
  constructor(start = Date.UTC(2026, 0, 1)) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    // Already due: a sleeper must not wait for the next advance() to learn that.
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const sleeper = { at: this.t + ms, resolve };
      this.sleepers.push(sleeper);
      this.sleepers.sort((a, b) => a.at - b.at);
      signal?.addEventListener(
        'abort',
        () => {
          this.sleepers = this.sleepers.filter((s) => s !== sleeper);
          reject(signal.reason);
        },
        { once: true },
      );
    });
  }
  /** Moves time forward, waking every sleeper whose deadline passes, in order. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    while (this.sleepers.length && this.sleepers[0].at <= end) {
      const s = this.sleepers.shift()!;
      this.t = Math.max(this.t, s.at);
      s.resolve();
      await new Promise((r) => setImmediate(r));
    }
    this.t = end;
  }
}

/** `ms` spread by +-20% so that many pollers do not fall into step; `random` is injectable for tests. */
export function jittered(ms: number, random: () => number = Math.random): number {
  return ms * (0.8 + random() * 0.4);
}

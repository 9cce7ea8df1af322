// The policy's `bandwidth` cap on what one relationship sends: a token bucket on the injectable
// clock, and a ReplicaLink wrapper that makes uploads (initial copy, deltas, resync) take their
// bytes from it, slice by slice inside the transfer when the link can pace, after it otherwise.
import { stat } from 'node:fs/promises';
import type { Clock } from '../../model/clock.ts';
import { TerminalError } from '../../model/errors.ts';
import type { ReplicaLink, UploadOptions } from './ports.ts';

/** Slices a paced stream is sent in (as transport/upload-client.ts paces a file). */
const PACE_SLICE = 64 << 10;

/**
 * The bucket's depth: 1/8 s of traffic, at most 1 MiB. Over any window of T seconds at most
 * `rate * T + burst` bytes pass, so the overshoot is bounded by 125 ms of traffic: a few percent on
 * a copy of some seconds (a whole second of traffic, `min(rate, 1 MiB)`, would let an 8 MiB copy
 * at 4 MiB/s run 14% over its cap). It is still far above timer jitter (a few ms), so pacing
 * reaches the cap instead of idling between wake-ups, and a waiter wakes about 8 times a second at
 * low rates, `rate / 1 MiB` times at high ones. The 1 MiB ceiling keeps a fast cap from letting
 * through more than a frame's worth at line speed.
 */
export function burstFor(rate: number): number {
  return Math.max(1, Math.min(1 << 20, Math.floor(rate / 8)));
}

/**
 * Bytes per request of a paced upload: a minute of traffic at the cap (64 KiB to 32 MiB), so that
 * a request never runs into the Replica server's request timeout (5 minutes) at a low cap; at
 * 100 KiB/s a 32 MiB request would take 5.5 minutes.
 */
export function pacedChunkSize(rate: number): number {
  return Math.max(64 << 10, Math.min(32 << 20, Math.floor(rate * 60)));
}

export interface TokenBucketStats {
  /** Bytes taken by `acquire` (each once its tokens were there). */
  granted: number;
  /** Bytes accounted after they were sent (`charge`): traffic that could not wait for tokens. */
  charged: number;
  /** Time spent waiting for tokens, summed over waiters (ms of the bucket's clock). */
  waitedMs: number;
}

/**
 * A token bucket of `rate` bytes per second holding at most `burst` bytes, full when created.
 * Bytes taken never exceed `rate * elapsed + burst` (with the rate in force at each instant). A
 * request larger than the burst is served in burst-sized parts as the tokens come. `charge` may
 * take the level below zero (a debt): later requests wait until it is paid back.
 */
export class TokenBucket {
  readonly stats: TokenBucketStats = { granted: 0, charged: 0, waitedMs: 0 };
  readonly #clock: Clock;
  #rate: number;
  #burst: number;
  #tokens: number;
  #at: number;
  /** Aborted on a rate change, so that sleepers re-plan at the new rate instead of oversleeping. */
  #wake = new AbortController();

  constructor(opts: { rate: number; clock: Clock; burst?: number }) {
    this.#clock = opts.clock;
    this.#rate = checkRate(opts.rate);
    this.#burst = opts.burst ?? burstFor(this.#rate);
    this.#tokens = this.#burst;
    this.#at = opts.clock.now();
  }

  get rate(): number {
    return this.#rate;
  }
  get burst(): number {
    return this.#burst;
  }
  /** Tokens available now (negative while a charge is being paid back). */
  get level(): number {
    this.#refill();
    return this.#tokens;
  }

  /** A new rate applies at once, to waiters too; what accrued so far accrued at the old one. */
  setRate(rate: number, burst = burstFor(checkRate(rate))): void {
    this.#refill();
    this.#rate = checkRate(rate);
    this.#burst = burst;
    this.#tokens = Math.min(this.#tokens, burst);
    const wake = this.#wake;
    this.#wake = new AbortController();
    wake.abort();
  }

  /** Resolves once `bytes` tokens were taken (0: once no debt is left). */
  async acquire(bytes: number): Promise<void> {
    let left = bytes;
    const started = this.#clock.now();
    for (;;) {
      this.#refill();
      if (this.#tokens > 0 && left > 0) {
        const take = Math.min(left, this.#tokens);
        this.#tokens -= take;
        left -= take;
        this.stats.granted += take;
      }
      if (left <= 0 && this.#tokens >= 0) break;
      // Sleep until enough for the next part (at most a burst), or the debt, has accrued.
      const need = Math.min(left, this.#burst) - this.#tokens;
      const ms = Math.max(1, Math.ceil((need * 1000) / this.#rate));
      const wake = this.#wake.signal;
      try {
        await this.#clock.sleep(ms, wake);
      } catch (e) {
        if (!wake.aborted) throw e; // only a rate change interrupts a sleep
      }
    }
    this.stats.waitedMs += this.#clock.now() - started;
  }

  /** Accounts bytes already sent: the level may go negative, and later requests pay for them. */
  charge(bytes: number): void {
    this.#refill();
    this.#tokens -= bytes;
    this.stats.charged += bytes;
  }

  #refill(): void {
    const now = this.#clock.now();
    // A clock stepping back adds nothing (and does not take back what was granted).
    const elapsed = Math.max(0, now - this.#at);
    this.#at = now;
    this.#tokens = Math.min(this.#burst, this.#tokens + (elapsed * this.#rate) / 1000);
  }
}

function checkRate(rate: number): number {
  if (!(Number.isFinite(rate) && rate > 0)) throw new TerminalError('invalid-argument', `a bandwidth cap must be a positive number of bytes per second, got ${rate}`);
  return rate;
}

/**
 * One relationship's cap: a bucket made on first use, its rate following the policy's `bandwidth`
 * (read at every request, so a modified policy applies to a transfer under way); unset, nothing
 * waits. The bucket outlives an unset spell, and its accounting with it.
 */
export class BandwidthCap {
  readonly #clock: Clock;
  #bandwidth: number | undefined;
  #bucket: TokenBucket | undefined;

  constructor(bandwidth: number | undefined, clock: Clock) {
    this.#bandwidth = bandwidth;
    this.#clock = clock;
  }

  /** Bytes per second, or undefined for unlimited. */
  set(bandwidth: number | undefined): void {
    this.#bandwidth = bandwidth;
    this.bucket();
  }

  get bandwidth(): number | undefined {
    return this.#bandwidth;
  }

  /** The bucket at the current cap; undefined while unlimited. */
  bucket(): TokenBucket | undefined {
    const rate = this.#bandwidth;
    if (rate === undefined) return undefined;
    if (!this.#bucket) this.#bucket = new TokenBucket({ rate, clock: this.#clock });
    else if (this.#bucket.rate !== rate) this.#bucket.setRate(rate);
    return this.#bucket;
  }

  /** The accounting so far (zeros before the first capped transfer). */
  get stats(): Readonly<TokenBucketStats> {
    return this.#bucket?.stats ?? { granted: 0, charged: 0, waitedMs: 0 };
  }
}

/**
 * `link` with its uploads paced by `bucketFor()` (asked at every slice: undefined means unlimited).
 * A link that calls `pace` (HTTPS) is paced inside the transfer; one that ignores it (an Azure
 * container today) sends the file at its own speed, and the file's size is charged afterwards, so
 * the next transfer waits: the average still holds, bursts are a log long. The replica's digests
 * for a resync or an existing-replica copy are charged by their size as they arrive. The other
 * calls are small JSON exchanges and pass untouched.
 */
export function throttledLink(link: ReplicaLink, bucketFor: () => TokenBucket | undefined): ReplicaLink {
  // A streamed body goes out in PACE_SLICE slices, each waiting for its tokens (none without a cap).
  const paced = (body: AsyncIterable<Buffer>): AsyncIterable<Buffer> => (bucketFor() ? (async function* () {
    for await (const chunk of body) {
      for (let at = 0; at < chunk.length; at += PACE_SLICE) {
        const slice = chunk.subarray(at, at + PACE_SLICE);
        await bucketFor()?.acquire(slice.length);
        yield slice;
      }
    }
  })() : body);
  return {
    createReplica: (req) => link.createReplica(req),
    status: (id) => link.status(id),
    apply: (id) => link.apply(id),
    discardPending: (id) => link.discardPending(id),
    settings: (id, retention) => link.settings(id, retention),
    remove: (id) => link.remove(id),
    async upload(id, sequence, diskId, path, onProgress, opts?: UploadOptions) {
      const bucket = bucketFor();
      if (!bucket) return link.upload(id, sequence, diskId, path, onProgress, opts);
      await bucket.acquire(0);
      let paced = 0;
      const pace = async (bytes: number): Promise<void> => {
        await opts?.pace?.(bytes);
        await bucketFor()?.acquire(bytes);
        paced += bytes;
      };
      await link.upload(id, sequence, diskId, path, onProgress, { chunkSize: pacedChunkSize(bucket.rate), ...opts, pace });
      // Not paced in the stream: charged whole. (A resumed upload whose bytes the replica already
      // held is charged too: a rare overcharge, which only delays.)
      if (paced === 0) bucketFor()?.charge((await stat(path)).size);
    },
    ...(link.initialSegment && {
      initialSegment(id: string, diskId: string, index: number, body: AsyncIterable<Buffer>) {
        return link.initialSegment!(id, diskId, index, paced(body));
      },
    }),
    ...(link.uploadStream && {
      uploadStream(id: string, sequence: number, diskId: string, body: AsyncIterable<Buffer>) {
        return link.uploadStream!(id, sequence, diskId, paced(body));
      },
    }),
    async checksums(id, diskId, compare) {
      await bucketFor()?.acquire(0);
      const digests = await link.checksums(id, diskId, compare);
      bucketFor()?.charge(digests.digests.length);
      return digests;
    },
  };
}

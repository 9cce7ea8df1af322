// The policy's bandwidth cap: the token bucket's accounting on a manual clock (what it grants never
// exceeds rate * elapsed + burst, a rate change applies to waiters at once, a charge is paid back),
// and a relationship with `bandwidth` set whose initial copy, delta and resync take every shipped
// byte from its bucket, over real HTTPS to a Replica server agent. No wall time is asserted.
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HttpReplicaLink } from '../../../src/agent/links/https.ts';
import { vmSource, type ReplicaLink } from '../../../src/core/replication/ports.ts';
import { PrimaryReplication } from '../../../src/core/replication/primary.ts';
import { newPrimaryRecord, retentionOf } from '../../../src/core/replication/primary-record.ts';
import { BandwidthCap, TokenBucket, burstFor, pacedChunkSize, throttledLink } from '../../../src/core/replication/throttle.ts';
import { TrackedDisk } from '../../../src/core/tracking/tracker.ts';
import { ManualClock } from '../../../src/model/clock.ts';
import type { ResolvedPolicySpec } from '../../../src/model/desired.ts';
import { loadCertBundle } from '../../../src/transport/certs.ts';
import { silentLogger } from '../../../src/transport/logger.ts';
import { PACE_SLICE } from '../../../src/transport/upload-client.ts';
import { Cluster, policy30s } from '../../agent/cluster.ts';
import { prng, tempDir } from '../helpers.ts';

const KiB = 1024;
const MiB = 1 << 20;
const tick = () => new Promise<void>((r) => setImmediate(r));

/** Runs `p` while moving `clock` forward in `stepMs` steps (one event-loop turn each) until it settles. */
async function driven<T>(clock: ManualClock, p: Promise<T>, stepMs = 20): Promise<T> {
  let settled = false;
  p.then(() => (settled = true), () => (settled = true));
  while (!settled) {
    await clock.advance(stepMs);
    await new Promise((r) => setTimeout(r, 1));
  }
  return p;
}

describe('TokenBucket', () => {
  test('burst: 1/8 s of traffic, at least a byte, at most 1 MiB', () => {
    expect(burstFor(4 * MiB)).toBe(512 * KiB);
    expect(burstFor(64 * MiB)).toBe(MiB);
    expect(burstFor(1000)).toBe(125);
    expect(burstFor(3)).toBe(1);
    expect(() => new TokenBucket({ rate: 0, clock: new ManualClock() })).toThrow(/positive/);
  });

  test('concurrent requests of any size: granted never exceeds rate * elapsed + burst, and every request completes', async () => {
    const clock = new ManualClock();
    const rate = 100_000;
    const bucket = new TokenBucket({ rate, clock });
    const t0 = clock.now();
    const rnd = prng(11);
    const sizes = Array.from({ length: 40 }, () => 1 + Math.floor(rnd() * 3 * bucket.burst));
    const total = sizes.reduce((a, b) => a + b, 0);
    let done = 0;
    // Four waiters at a time, each taking its next request once the last one was granted.
    const lanes = [0, 1, 2, 3].map(async (lane) => {
      for (let i = lane; i < sizes.length; i += 4) {
        await bucket.acquire(sizes[i]);
        done += sizes[i];
      }
    });
    const all = Promise.all(lanes);
    let settled = false;
    void all.then(() => (settled = true));
    while (!settled) {
      await clock.advance(1 + Math.floor(rnd() * 40));
      await tick();
      const elapsed = clock.now() - t0;
      expect(bucket.stats.granted).toBeLessThanOrEqual((rate * elapsed) / 1000 + bucket.burst);
      expect(done).toBeLessThanOrEqual(bucket.stats.granted);
    }
    expect(done).toBe(total);
    expect(bucket.stats.granted).toBe(total);
    // Nothing idles: the whole lot needs (total - burst) / rate seconds, and took at most a step more per request.
    const elapsed = clock.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(((total - bucket.burst) * 1000) / rate);
    expect(elapsed).toBeLessThanOrEqual(((total - bucket.burst) * 1000) / rate + 41 * sizes.length);
    expect(bucket.stats.waitedMs).toBeGreaterThan(0);
    expect(bucket.stats.charged).toBe(0);
  });

  test('a rate change applies at once, to a request already waiting', async () => {
    const clock = new ManualClock();
    const bucket = new TokenBucket({ rate: 1000, clock });
    let granted = false;
    const big = bucket.acquire(100_000).then(() => (granted = true));
    await clock.advance(1000);
    await tick();
    // 125 at start plus 1000 accrued: the rest would take 99 s more at 1000 B/s.
    expect(bucket.stats.granted).toBe(1125);
    expect(granted).toBe(false);
    bucket.setRate(1_000_000);
    expect(bucket.burst).toBe(125_000);
    // 98 875 bytes at 1 MB/s: about 99 ms, not the 99 s the waiter was sleeping for.
    await clock.advance(100);
    await tick();
    await big;
    expect(granted).toBe(true);
    expect(bucket.stats.granted).toBe(100_000);
    expect(bucket.stats.waitedMs).toBe(1100);
    // Down again: the level is clamped to the new burst, so the next second passes only 1000 + 125.
    bucket.setRate(1000);
    const after = bucket.stats.granted;
    void bucket.acquire(10_000);
    await clock.advance(1000);
    await tick();
    expect(bucket.stats.granted - after).toBeLessThanOrEqual(1125);
  });

  test('a charge is a debt: the next request waits until it is paid back', async () => {
    const clock = new ManualClock();
    const bucket = new TokenBucket({ rate: 1000, clock });
    bucket.charge(10_125); // the full burst plus 10 s of traffic
    expect(bucket.level).toBe(-10_000);
    let ready = false;
    const next = bucket.acquire(0).then(() => (ready = true));
    await clock.advance(9_900);
    await tick();
    expect(ready).toBe(false);
    await clock.advance(200);
    await next;
    expect(bucket.stats).toEqual({ granted: 0, charged: 10_125, waitedMs: 10_000 });
  });

  test('BandwidthCap: no bucket while unlimited; the same bucket follows each new cap', () => {
    const cap = new BandwidthCap(undefined, new ManualClock());
    expect(cap.bucket()).toBeUndefined();
    cap.set(4 * MiB);
    const b = cap.bucket()!;
    expect(b.rate).toBe(4 * MiB);
    cap.set(MiB);
    expect(cap.bucket()).toBe(b);
    expect(b.rate).toBe(MiB);
    cap.set(undefined);
    expect(cap.bucket()).toBeUndefined();
    expect(cap.stats.granted).toBe(0);
  });
});

describe('throttledLink', () => {
  test('a paced upload asks for requests of a minute of traffic at the cap (64 KiB to 32 MiB), inside the server\'s 5-minute request timeout', async () => {
    expect(pacedChunkSize(100 * KiB)).toBe(6000 * KiB);
    expect(pacedChunkSize(4 * MiB)).toBe(32 * MiB);
    expect(pacedChunkSize(100)).toBe(64 * KiB);
    const { dir, cleanup } = await tempDir('throttle-chunk');
    try {
      const file = join(dir, 'log.hrl');
      await writeFile(file, Buffer.alloc(100));
      const seen: { chunkSize?: number; paced: boolean }[] = [];
      const inner = {
        upload: async (_id: string, _seq: number, _d: string, _p: string, _on: unknown, opts?: { chunkSize?: number; pace?: (n: number) => Promise<void> }) => {
          await opts?.pace?.(100);
          seen.push({ ...(opts?.chunkSize !== undefined && { chunkSize: opts.chunkSize }), paced: !!opts?.pace });
        },
      } as unknown as ReplicaLink;
      const bucket = new TokenBucket({ rate: 100 * KiB, clock: new ManualClock() });
      let capped = true;
      const link = throttledLink(inner, () => (capped ? bucket : undefined));
      await link.upload('r', 1, 'd', file);
      capped = false;
      await link.upload('r', 2, 'd', file);
      expect(seen).toEqual([{ chunkSize: 6000 * KiB, paced: true }, { paced: false }]);
      expect(bucket.stats).toMatchObject({ granted: 100, charged: 0 });
    } finally {
      await cleanup();
    }
  });

  test('a link that ignores `pace` has each file charged after it is sent, and the next upload waits for the debt', async () => {
    const { dir, cleanup } = await tempDir('throttle-link');
    try {
      const file = join(dir, 'log.hrl');
      await writeFile(file, Buffer.alloc(5000));
      const sent: string[] = [];
      const inner = { upload: async (_id: string, seq: number) => void sent.push(`log ${seq}`) } as unknown as ReplicaLink;
      const clock = new ManualClock();
      const bucket = new TokenBucket({ rate: 1000, clock });
      const link = throttledLink(inner, () => bucket);
      await link.upload('r', 1, 'd', file);
      expect(bucket.stats.charged).toBe(5000);
      let second = false;
      const p = link.upload('r', 2, 'd', file).then(() => (second = true));
      await clock.advance(4000);
      await tick();
      expect(sent).toEqual(['log 1']); // 4875 bytes still owed
      await clock.advance(1000);
      await p;
      expect(second).toBe(true);
      expect(sent).toEqual(['log 1', 'log 2']);
    } finally {
      await cleanup();
    }
  });
});

describe('a relationship with bandwidth set, over HTTPS to a Replica server', () => {
  const SIZE = 2 * MiB;
  const RATE = MiB;
  let cluster: Cluster;
  let link: HttpReplicaLink;
  let disk: TrackedDisk;
  let primary: PrimaryReplication;
  let clock: ManualClock;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const t = await tempDir('bandwidth');
    cleanup = t.cleanup;
    cluster = await Cluster.create([{ name: 'host-a', replicaServer: false }, { name: 'host-b' }], [], { root: join(t.dir, 'cluster') });
    await cluster.startInProcess('host-b');
    link = new HttpReplicaLink(cluster.host('host-b').url, await loadCertBundle(cluster.certs, 'host-a'));
    disk = await TrackedDisk.create(join(t.dir, 'd0.raw'), SIZE);
    await disk.write(0, randomBytes(SIZE)); // incompressible: the log is about as big as the disk
    const resolved = policy30s as ResolvedPolicySpec;
    const policy: ResolvedPolicySpec = { ...resolved, recoveryPoints: { additional: 0 }, resync: { ...resolved.resync, automatic: false }, bandwidth: RATE };
    const keys = { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
    const disks = [{ id: disk.id, size: SIZE }];
    await link.createReplica({ id: 'rel-bw', vm: 'bw', disks, retention: retentionOf(policy), keys: { encryptionKey: keys.encryptionKey.toString('base64'), macKey: keys.macKey.toString('base64') } });
    const dir = join(t.dir, 'rel');
    await mkdir(dir, { recursive: true });
    const record = newPrimaryRecord({ id: 'rel-bw', vm: 'bw', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy, excludeDisks: [], disks });
    clock = new ManualClock();
    primary = new PrimaryReplication({ dir, record, keys, source: vmSource([disk]), link, clock, log: silentLogger });
  }, 60_000);

  afterAll(async () => {
    link?.close();
    await disk?.close();
    await cluster?.destroy();
    await cleanup?.();
  });

  test('initial copy, delta and resync: the bytes through the bucket are the bytes shipped, paced in slices inside the upload', async () => {
    const t0 = clock.now();
    const sentBefore = link.counters.bytesSent;
    const initial = await driven(clock, primary.startInitial());
    expect(initial.action).toBe('initial');
    expect(primary.state).toBe('Replicating');
    const stats = primary.bandwidth.stats;
    const shipped = primary.record.bytesShipped;
    expect(shipped).toBeGreaterThan(SIZE);
    expect(stats.granted).toBe(shipped);
    expect(stats.charged).toBe(0); // paced in the stream, not after it
    // Every upload body byte went through the bucket (the rest the link sent is small JSON).
    expect(link.counters.bytesSent - sentBefore).toBeGreaterThanOrEqual(shipped);
    expect(link.counters.bytesSent - sentBefore - shipped).toBeLessThan(16 * KiB);
    const burst = primary.bandwidth.bucket()!.burst;
    expect(burst).toBe(128 * KiB);
    // The clock had to move at least as far as the cap allows for these bytes.
    expect(clock.now() - t0).toBeGreaterThanOrEqual(((shipped - burst) * 1000) / RATE);
    expect(stats.waitedMs).toBeGreaterThan(0);

    // A delta.
    await disk.write(64 * KiB, randomBytes(3 * PACE_SLICE));
    const delta = await driven(clock, primary.cycle());
    expect(delta.action).toBe('delta');
    expect(delta.applied).toBe(delta.sequence);
    expect(primary.bandwidth.stats.granted).toBe(primary.record.bytesShipped);
    expect(primary.record.bytesShipped - shipped).toBeGreaterThan(3 * PACE_SLICE);

    // A resync: the replica's digests are charged as they arrive, the resync log is paced.
    await disk.write(SIZE - 128 * KiB, randomBytes(64 * KiB));
    const beforeResync = primary.record.bytesShipped;
    const resync = await driven(clock, primary.requestResync());
    expect(resync.action).toBe('resync');
    expect(primary.state).toBe('Replicating');
    expect(primary.record.bytesShipped).toBeGreaterThan(beforeResync);
    expect(primary.bandwidth.stats.granted).toBe(primary.record.bytesShipped);
    expect(primary.bandwidth.stats.charged).toBeGreaterThan(0);
  }, 60_000);

  test('a modified policy changes the cap at once, on the same bucket; unset, nothing is paced', async () => {
    const bucket = primary.bandwidth.bucket()!;
    const policy = primary.record.policy;
    await primary.modify({ ...policy, bandwidth: 8 * MiB });
    expect(primary.bandwidth.bucket()).toBe(bucket);
    expect(bucket.rate).toBe(8 * MiB);
    const { bandwidth: _, ...unlimited } = policy;
    await primary.modify(unlimited);
    expect(primary.bandwidth.bucket()).toBeUndefined();
    const granted = primary.bandwidth.stats.granted;
    await disk.write(0, randomBytes(PACE_SLICE));
    const delta = await primary.cycle(); // no clock driver: it must not wait for tokens
    expect(delta.action).toBe('delta');
    expect(primary.bandwidth.stats.granted).toBe(granted);
  }, 60_000);
});

import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RetryableError, TerminalError } from '../../../src/model/errors.ts';
import { ReplicaStore } from '../../../src/core/replica/replica-store.ts';
import type { RetentionPolicy } from '../../../src/core/replica/recovery-points.ts';
import { selectRetained } from '../../../src/core/replica/recovery-points.ts';
import type { Extent } from '../../../src/core/types.ts';
import { MiB, applyToReference, buildLog, header, newKeys, randomWrites, sha, tempDir } from './helpers.ts';

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 0, 1);
const REL = 'rel-web-01';
const DISKS = [
  { id: 'os', size: 8 * MiB },
  { id: 'data', size: 16 * MiB },
];

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function scratch(name: string): Promise<string> {
  const t = await tempDir(name);
  cleanups.push(t.cleanup);
  return t.dir;
}

async function fileSha(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

async function viewSha(store: ReplicaStore, seq: number, diskId: string): Promise<string> {
  const v = await store.openView(seq, diskId);
  const h = createHash('sha256');
  try {
    for (let at = 0; at < v.size; at += 4 * MiB) h.update(await v.read(at, Math.min(4 * MiB, v.size - at)));
  } finally {
    await v.close();
  }
  return h.digest('hex');
}

/** Drives a primary in memory: per point, random writes per disk, a reference image and its hash. */
class Primary {
  readonly refs = new Map(DISKS.map((d) => [d.id, Buffer.alloc(d.size)]));
  readonly hashes = new Map<number, Record<string, string>>();
  readonly keys = newKeys();
  private readonly logDir: string;
  constructor(logDir: string) {
    this.logDir = logDir;
  }

  /** Writes point `seq`'s logs (one per disk) and returns their paths. */
  async point(seq: number, opts: { time?: number; consistency?: 'crash' | 'app'; writes?: number } = {}): Promise<Record<string, string>> {
    const paths: Record<string, string> = {};
    for (const d of DISKS) {
      const ref = this.refs.get(d.id)!;
      const writes: Extent[] = seq === 1
        ? [{ offset: 0, data: Buffer.from(ref) }, ...randomWrites(seq * 100 + d.size, d.size, 40)]
        : randomWrites(seq * 100 + d.size, d.size, opts.writes ?? 25);
      applyToReference(ref, writes);
      const path = join(this.logDir, `${seq}.${d.id}.hrl`);
      await buildLog(path, header({
        relationshipId: REL, diskId: d.id, sequence: seq, diskSize: d.size,
        cutTime: opts.time ?? T0 + seq * 60_000, consistency: opts.consistency ?? 'crash',
      }), writes, this.keys);
      paths[d.id] = path;
    }
    this.hashes.set(seq, Object.fromEntries(DISKS.map((d) => [d.id, sha(this.refs.get(d.id)!)])));
    return paths;
  }
}

async function ship(store: ReplicaStore, seq: number, paths: Record<string, string>): Promise<void> {
  for (const [diskId, path] of Object.entries(paths)) expect(await store.receive(diskId, seq, path)).toBe(true);
}

async function openStore(dir: string, p: Primary, retention?: RetentionPolicy): Promise<ReplicaStore> {
  return ReplicaStore.open(dir, p.keys, { relationshipId: REL, disks: DISKS, retention });
}

describe('replica store', () => {
  it('applies 20 points over 2 disks; the latest image and every retained point match their references', async () => {
    const dir = await scratch('store20');
    const p = new Primary(await scratch('logs20'));
    const store = await openStore(join(dir, 'replica'), p, { additional: 4 });
    for (let seq = 1; seq <= 20; seq++) {
      // 20 minutes apart: several points per hour, so pruning and undo hand-over both happen
      await ship(store, seq, await p.point(seq, { time: T0 + seq * 20 * 60_000 }));
      const applied = await store.applyPending();
      expect(applied.map((a) => a.sequence)).toEqual([seq]);
      for (const d of DISKS) expect(await fileSha(store.diskPath(d.id))).toBe(p.hashes.get(seq)![d.id]);
      if (seq % 5 === 0 || seq === 20) {
        for (const pt of store.points()) for (const d of DISKS) expect(await viewSha(store, pt.sequence, d.id)).toBe(p.hashes.get(pt.sequence)![d.id]);
      }
    }
    // latest plus the last point of each of the 4 complete hours before the latest's hour
    const now = T0 + 20 * 20 * 60_000;
    expect(store.points().map((x) => x.sequence)).toEqual(
      [...selectRetained(store.points(), { additional: 4 }, now)].sort((a, b) => a - b),
    );
    expect(store.points().length).toBe(5);
    const oldest = store.points()[0].sequence;
    const exported = await store.exportView(oldest, 'data', join(dir, 'export.img'));
    expect(exported.sha256).toBe(p.hashes.get(oldest)!.data);
    expect(await fileSha(join(dir, 'export.img'))).toBe(p.hashes.get(oldest)!.data);
    await store.close();
    // reopening changes nothing
    const again = await openStore(join(dir, 'replica'), p, { additional: 4 });
    expect(again.points()).toEqual(store.points());
    expect(await viewSha(again, oldest, 'os')).toBe(p.hashes.get(oldest)!.os);
    await again.removeAll();
    await expect(readdir(join(dir, 'replica'))).rejects.toThrow();
  });

  it('rejects a damaged log whole: nothing applied, the log dropped for re-sending, the good copy then applies', async () => {
    const p = new Primary(await scratch('logs-bad'));
    const store = await openStore(await scratch('store-bad'), p);
    await ship(store, 1, await p.point(1));
    await store.applyPending();
    const before = await fileSha(store.diskPath('data'));
    const paths = await p.point(2);
    for (const flip of [10, 3000, -40]) {
      const bad = await readFile(paths.data);
      bad[flip < 0 ? bad.length + flip : flip] ^= 1;
      const badPath = `${paths.data}.bad`;
      await writeFile(badPath, bad);
      await store.receive('os', 2, paths.os);
      await store.receive('data', 2, badPath);
      const e = await store.applyPending().catch((x: unknown) => x);
      expect(RetryableError.is(e) && e.code).toBe('integrity');
      expect(await fileSha(store.diskPath('data'))).toBe(before);
      expect(await fileSha(store.diskPath('os'))).toBe(p.hashes.get(1)!.os);
      expect(store.applied).toBe(1);
      expect((await readdir(join(store.dir, 'incoming'))).sort()).toEqual(['2.os.hrl']);
    }
    // a truncated log is rejected the same way
    const whole = await readFile(paths.data);
    await writeFile(`${paths.data}.cut`, whole.subarray(0, whole.length >> 1));
    await store.receive('data', 2, `${paths.data}.cut`);
    expect(RetryableError.is(await store.applyPending().catch((x: unknown) => x))).toBe(true);
    expect(await fileSha(store.diskPath('data'))).toBe(before);

    await store.receive('data', 2, paths.data);
    expect((await store.applyPending()).map((a) => a.sequence)).toEqual([2]);
    expect(await fileSha(store.diskPath('data'))).toBe(p.hashes.get(2)!.data);
    await store.close();
  });

  it('treats a log applied twice as a no-op and waits for every disk of a point', async () => {
    const p = new Primary(await scratch('logs-dup'));
    const store = await openStore(await scratch('store-dup'), p);
    const one = await p.point(1);
    await store.receive('os', 1, one.os);
    expect(await store.applyPending()).toEqual([]); // the cut spans both disks
    expect(await store.receive('os', 1, one.os)).toBe(false); // already received
    await store.receive('data', 1, one.data);
    expect((await store.applyPending()).map((a) => a.sequence)).toEqual([1]);
    const two = await p.point(2);
    await ship(store, 2, two);
    await store.applyPending();
    const hashes = { os: await fileSha(store.diskPath('os')), data: await fileSha(store.diskPath('data')) };
    expect(await store.receive('os', 2, two.os)).toBe(false);
    expect(await store.receive('data', 1, one.data)).toBe(false);
    expect(await store.applyPending()).toEqual([]);
    expect({ os: await fileSha(store.diskPath('os')), data: await fileSha(store.diskPath('data')) }).toEqual(hashes);
    expect(await readdir(join(store.dir, 'incoming'))).toEqual([]);
    await store.close();
  });

  it('detects a broken chain: a log based on another point, or a later log skipping a missing one', async () => {
    const p = new Primary(await scratch('logs-chain'));
    const dir = await scratch('store-chain');
    const store = await openStore(dir, p);
    await ship(store, 1, await p.point(1));
    await store.applyPending();
    // sequence 2 claiming to follow point 0 (e.g. a primary that restarted its chain)
    for (const d of DISKS) {
      const path = join(dir, `2.${d.id}.wrong`);
      await buildLog(path, header({ relationshipId: REL, diskId: d.id, diskSize: d.size, sequence: 2, basePoint: 0 }), [], p.keys);
      await store.receive(d.id, 2, path);
    }
    const e = await store.applyPending().catch((x: unknown) => x);
    expect(TerminalError.is(e) && e.code).toBe('broken-chain');
    expect(String((e as Error).message)).toMatch(/based on point 0.*at 1/);

    const store2 = await openStore(await scratch('store-chain2'), p);
    await ship(store2, 1, await p.point(1, {}));
    await store2.applyPending();
    // point 3 based on 2 arrives before 2: wait, not an error
    for (const d of DISKS) {
      const path = join(dir, `3.${d.id}.early`);
      await buildLog(path, header({ relationshipId: REL, diskId: d.id, diskSize: d.size, sequence: 3 }), [], p.keys);
      await store2.receive(d.id, 3, path);
    }
    expect(await store2.applyPending()).toEqual([]);
    // point 4 based on 1: point 2 and 3 can never fit in between
    const path = join(dir, '4.os.gap');
    await buildLog(path, header({ relationshipId: REL, diskId: 'os', diskSize: 8 * MiB, sequence: 4, basePoint: 1 }), [], p.keys);
    await store2.receive('os', 4, path);
    const g = await store2.applyPending().catch((x: unknown) => x);
    expect(TerminalError.is(g) && g.code).toBe('broken-chain');
    await store.close();
    await store2.close();
  });

  it('retention keeps exactly the latest, the last point of each of the last N hours, and their app-consistent points', async () => {
    const p = new Primary(await scratch('logs-ret'));
    const store = await openStore(await scratch('store-ret'), p, { additional: 2, appConsistentEvery: HOUR });
    const at = (h: number, m: number) => T0 + h * HOUR + m * 60_000;
    // [sequence, time, consistency]
    const plan: [number, number, 'crash' | 'app'][] = [
      [1, at(0, 10), 'crash'], [2, at(0, 50), 'crash'],
      [3, at(1, 5), 'app'], [4, at(1, 30), 'crash'], [5, at(1, 55), 'crash'],
      [6, at(2, 0), 'crash'], [7, at(2, 20), 'app'], [8, at(2, 40), 'crash'],
      [9, at(3, 15), 'crash'], [10, at(3, 45), 'crash'],
    ];
    for (const [seq, time, consistency] of plan) {
      await ship(store, seq, await p.point(seq, { time, consistency, writes: 5 }));
      await store.applyPending();
    }
    // now = 03:45: hours 01 and 02 keep their last point (5, 8) and last app point (3, 7); 03 its last (10)
    expect(store.points().map((x) => x.sequence)).toEqual([3, 5, 7, 8, 10]);
    for (const pt of store.points()) expect(await viewSha(store, pt.sequence, 'data')).toBe(p.hashes.get(pt.sequence)!.data);
    // at 04:00 with no new point, hour 01 leaves the window; hours 02 and 03 stay
    expect(await store.prune(at(4, 0))).toEqual([3, 5]);
    expect(store.points().map((x) => x.sequence)).toEqual([7, 8, 10]);
    for (const pt of store.points()) expect(await viewSha(store, pt.sequence, 'os')).toBe(p.hashes.get(pt.sequence)!.os);
    await store.setRetention({ additional: 0 });
    await store.prune();
    expect(store.points().map((x) => x.sequence)).toEqual([10]);
    // with no older point left, no undo data remains
    expect(await readdir(join(store.dir, 'undo'))).toEqual([]);
    await store.close();
  });

  it('keeps a point readable while a view of it is open, even as newer points apply', async () => {
    const p = new Primary(await scratch('logs-pin'));
    const store = await openStore(await scratch('store-pin'), p);
    await ship(store, 1, await p.point(1));
    await store.applyPending();
    const view = await store.openView(1, 'data');
    for (let seq = 2; seq <= 4; seq++) {
      await ship(store, seq, await p.point(seq));
      await store.applyPending();
    }
    expect(store.points().map((x) => x.sequence)).toEqual([1, 4]);
    const h = createHash('sha256');
    for (let at = 0; at < view.size; at += 4 * MiB) h.update(await view.read(at, 4 * MiB));
    expect(h.digest('hex')).toBe(p.hashes.get(1)!.data);
    await view.close();
    await store.prune();
    expect(store.points().map((x) => x.sequence)).toEqual([4]);
    await store.close();
  });

  it('reports replica write amplification with and without retained points', async () => {
    const report: Record<string, unknown> = {};
    for (const additional of [0, 4]) {
      const p = new Primary(await scratch(`logs-wa${additional}`));
      const store = await openStore(await scratch(`store-wa${additional}`), p, { additional });
      await ship(store, 1, await p.point(1));
      await store.applyPending();
      const base = store.stats();
      for (let seq = 2; seq <= 12; seq++) {
        await ship(store, seq, await p.point(seq, { time: T0 + seq * 30 * 60_000 }));
        await store.applyPending();
      }
      const s = store.stats();
      const applied = s.bytesApplied - base.bytesApplied;
      const written = (k: 'imageBytesWritten' | 'undoBytesWritten' | 'journalBytesWritten') => s[k] - base[k];
      const total = written('imageBytesWritten') + written('undoBytesWritten') + written('journalBytesWritten');
      report[`additional=${additional}`] = {
        appliedMiB: +(applied / MiB).toFixed(1),
        image: +(written('imageBytesWritten') / applied).toFixed(3),
        undo: +(written('undoBytesWritten') / applied).toFixed(3),
        journal: +(written('journalBytesWritten') / applied).toFixed(4),
        received: +((s.bytesReceived - base.bytesReceived) / applied).toFixed(3),
        writtenPerApplied: +(total / applied).toFixed(3),
      };
      expect(written('imageBytesWritten')).toBe(applied);
      if (additional === 0) expect(written('undoBytesWritten')).toBe(0);
      else expect(written('undoBytesWritten')).toBeGreaterThan(0);
      await store.close();
    }
    console.log('replica write amplification (bytes written per byte applied, deltas after the initial copy):', JSON.stringify(report));
  });
});

describe('undo of retained points', () => {
  it('saves a block overwritten twice before the next kept point once, and every kept point still reads exactly', async () => {
    const keys = newKeys();
    const logs = await scratch('logs-dedupe');
    const disks = [{ id: 'd', size: 4 * MiB }];
    const store = await ReplicaStore.open(await scratch('store-dedupe'), keys, { relationshipId: REL, disks, retention: { additional: 2 } });
    const ref = Buffer.alloc(4 * MiB);
    const hashes = new Map<number, string>();
    const block = (b: number, fill: number): Extent => ({ offset: b * 4096, data: Buffer.alloc(4096, fill) });
    // [sequence, minutes after T0, writes]: 1 full; 2 at 00:50; 3 and 4 in hour 01 both rewrite
    // blocks 10-19 (4 makes 3 obsolete); 5 in hour 02 rewrites them again.
    const plan: [number, number, Extent[]][] = [
      [1, 10, [{ offset: 0, data: Buffer.alloc(4 * MiB, 1) }]],
      [2, 50, Array.from({ length: 10 }, (_, i) => block(10 + i, 2))],
      [3, 70, [...Array.from({ length: 10 }, (_, i) => block(10 + i, 3)), block(100, 3)]],
      [4, 100, [...Array.from({ length: 10 }, (_, i) => block(10 + i, 4)), block(200, 4)]],
      [5, 130, Array.from({ length: 10 }, (_, i) => block(10 + i, 5))],
    ];
    const undoBytes: number[] = [];
    for (const [seq, minutes, writes] of plan) {
      applyToReference(ref, writes);
      hashes.set(seq, sha(ref));
      const path = join(logs, `${seq}.hrl`);
      await buildLog(path, header({ relationshipId: REL, diskId: 'd', sequence: seq, diskSize: 4 * MiB, cutTime: T0 + minutes * 60_000 }), writes, keys);
      const before = store.stats().undoBytesWritten;
      expect(await store.receive('d', seq, path)).toBe(true);
      await store.applyPending();
      undoBytes.push(store.stats().undoBytesWritten - before);
      for (const pt of store.points()) expect(await viewSha(store, pt.sequence, 'd')).toBe(hashes.get(pt.sequence));
    }
    // point 3 (01:10) was dropped when 4 (01:40) applied; 2 (hour 00) and 4 (hour 01) stay
    expect(store.points().map((x) => x.sequence)).toEqual([2, 4, 5]);
    // 3 saved 11 blocks; 4 saved only block 200 (blocks 10-19 already held by 3's undo for point 2)
    expect(undoBytes[2]).toBeGreaterThanOrEqual(11 * 4096);
    expect(undoBytes[3]).toBeGreaterThanOrEqual(4096);
    expect(undoBytes[3]).toBeLessThan(2 * 4096);
    // reopening keeps every point readable
    await store.close();
    const again = await ReplicaStore.open(store.dir, keys, { relationshipId: REL, disks });
    for (const pt of again.points()) expect(await viewSha(again, pt.sequence, 'd')).toBe(hashes.get(pt.sequence));
    await again.close();
  });
});

describe('selectRetained', () => {
  const pt = (sequence: number, time: number, consistency: 'crash' | 'app' = 'crash') => ({ sequence, time, consistency, cutId: `c${sequence}` });
  const cases: { reason: string; points: ReturnType<typeof pt>[]; policy: RetentionPolicy; now: number; keep: number[] }[] = [
    { reason: 'no additional points: only the latest', points: [pt(1, 0), pt(2, HOUR), pt(3, 2 * HOUR)], policy: { additional: 0 }, now: 2 * HOUR, keep: [3] },
    { reason: 'the current hour is represented by the latest alone', points: [pt(1, 10), pt(2, 20), pt(3, 30)], policy: { additional: 3 }, now: 40, keep: [3] },
    { reason: 'last point per complete hour within the window', points: [pt(1, 0), pt(2, HOUR - 1), pt(3, HOUR), pt(4, 2 * HOUR + 5)], policy: { additional: 2 }, now: 2 * HOUR + 10, keep: [2, 3, 4] },
    { reason: 'hours older than the window are dropped', points: [pt(1, 0), pt(2, HOUR), pt(3, 3 * HOUR)], policy: { additional: 1 }, now: 3 * HOUR, keep: [3] },
    { reason: 'app-consistent point of a kept hour is kept when app-consistent points are on', points: [pt(1, 0, 'app'), pt(2, 10), pt(3, HOUR)], policy: { additional: 1, appConsistentEvery: HOUR }, now: HOUR, keep: [1, 2, 3] },
    { reason: 'an app-consistent point of the still-open hour survives until its hour completes', points: [pt(1, HOUR + 5, 'app'), pt(2, HOUR + 10)], policy: { additional: 1, appConsistentEvery: HOUR }, now: HOUR + 10, keep: [1, 2] },
    { reason: 'without app-consistent points configured, only the hour\'s last point', points: [pt(1, 0, 'app'), pt(2, 10), pt(3, HOUR)], policy: { additional: 1 }, now: HOUR, keep: [2, 3] },
  ];
  for (const c of cases) {
    it(c.reason, () => {
      expect([...selectRetained(c.points, c.policy, c.now)].sort((a, b) => a - b)).toEqual(c.keep);
    });
  }
});

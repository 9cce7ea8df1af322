// Kills a real child process (SIGKILL) at random moments while it receives and applies points,
// then reopens the replica and checks it sits exactly at one complete point on every disk. The
// replica is encrypted at rest (as an agent makes it), and the writes include partial 4 KiB units,
// which an encrypted image rewrites whole.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { ReplicaStore } from '../../../src/core/replica/replica-store.ts';
import type { BlockReader } from '../../../src/core/replica/replica-store.ts';
import { newAtRestKey } from '../../../src/core/disk/at-rest.ts';
import { STATE_FILE } from '../../../src/core/replica/replica-state.ts';
import { MiB, applyToReference, buildLog, header, newKeys, randomWrites, rng, sha, tempDir } from './helpers.ts';

const CHILD = fileURLToPath(new URL('./fixtures/apply-child.ts', import.meta.url));
const REL = 'rel-crash';
const DISKS = [
  { id: 'os', size: 8 * MiB },
  { id: 'data', size: 8 * MiB },
];
const POINTS = 30;
const KILLS = 14;
const T0 = Date.UTC(2026, 0, 1);

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

/** SHA-256 of what a reader returns (the image decrypted), closing it. */
async function readerSha(r: BlockReader): Promise<string> {
  const h = createHash('sha256');
  for (let o = 0; o < r.size; o += 4 * MiB) h.update(await r.read(o, Math.min(4 * MiB, r.size - o)));
  await r.close();
  return h.digest('hex');
}

interface ChildRun {
  killed: boolean;
  done: boolean;
  perPoint: number[];
}

/** Runs the child; kills it `delay` ms after it reports ready (no kill when delay is undefined). */
function runChild(cfg: object, delay: number | undefined): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const run: ChildRun = { killed: false, done: false, perPoint: [] };
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        if (line.startsWith('ready') && delay !== undefined) setTimeout(() => child.kill('SIGKILL'), delay);
        if (line.startsWith('applied')) run.perPoint.push(Number(line.split(' ')[2]));
        if (line === 'done') run.done = true;
      }
    });
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      run.killed = signal === 'SIGKILL';
      if (!run.killed && code !== 0) reject(new Error(`child exited with ${code}: ${err}`));
      else resolve(run);
    });
  });
}

it('an apply killed at any instant leaves every disk at one complete point, and applying again converges', async () => {
  const { dir, cleanup } = await tempDir('crash');
  cleanups.push(cleanup);
  const staging = join(dir, 'staging');
  const replica = join(dir, 'replica');
  const keys = newKeys();
  const atRestKey = newAtRestKey();
  await mkdir(staging, { recursive: true });

  // Many small records per point make an apply long enough for kills to land inside it.
  const refs = new Map(DISKS.map((d) => [d.id, Buffer.alloc(d.size)]));
  const hashes = new Map<number, Record<string, string>>();
  for (let seq = 1; seq <= POINTS; seq++) {
    for (const d of DISKS) {
      const writes = randomWrites(seq * 7919 + d.id.length, d.size, seq === 1 ? 60 : 300, { maxLength: 8192 });
      applyToReference(refs.get(d.id)!, writes);
      await buildLog(join(staging, `${seq}.${d.id}.hrl`), header({
        relationshipId: REL, diskId: d.id, diskSize: d.size, sequence: seq, cutTime: T0 + seq * 15 * 60_000,
      }), writes, keys);
    }
    hashes.set(seq, Object.fromEntries(DISKS.map((d) => [d.id, sha(refs.get(d.id)!)])));
  }

  const cfg = {
    dir: replica, staging, last: POINTS, relationshipId: REL, disks: DISKS, additional: 2,
    encryptionKey: keys.encryptionKey.toString('hex'), macKey: keys.macKey.toString('hex'), atRestKey: atRestKey.toString('hex'),
  };
  const r = rng(20260101);
  const perPoint: number[] = [];
  let landed = 0;
  let rolledForward = 0;
  const seenAt = new Set<number>();
  for (let attempt = 0; landed < KILLS && attempt < 40; attempt++) {
    const mean = perPoint.length > 2 ? perPoint.reduce((a, b) => a + b, 0) / perPoint.length : 150;
    const delay = r.next() * mean * 3;
    const run = await runChild(cfg, delay);
    perPoint.push(...run.perPoint.filter((_, i) => i > 0 || run.perPoint.length === 1)); // first point of a run pays warm-up
    if (run.done) break;
    if (!run.killed) continue;
    landed++;
    const state = JSON.parse(await readFile(join(replica, STATE_FILE), 'utf8')) as { applying: unknown };
    if (state.applying) rolledForward++;

    const store = await ReplicaStore.open(replica, keys, { relationshipId: REL, disks: DISKS, atRestKey });
    const at = store.applied;
    seenAt.add(at);
    if (at > 0) {
      // one complete point, the same on every disk, never in between
      for (const d of DISKS) expect(await readerSha(await store.openImage(d.id)), `disk ${d.id} after kill ${landed}`).toBe(hashes.get(at)![d.id]);
      for (const p of store.points().slice(0, -1)) {
        expect(await readerSha(await store.openView(p.sequence, 'data')), `view of point ${p.sequence} after kill ${landed}`).toBe(hashes.get(p.sequence)!.data);
      }
    }
    await store.close();
  }
  expect(landed).toBeGreaterThanOrEqual(KILLS);

  const last = await runChild(cfg, undefined);
  expect(last.done).toBe(true);
  const store = await ReplicaStore.open(replica, keys, { relationshipId: REL, disks: DISKS, atRestKey });
  expect(store.applied).toBe(POINTS);
  expect(store.atRest).toBe('aes-256-xts');
  for (const d of DISKS) expect(await readerSha(await store.openImage(d.id))).toBe(hashes.get(POINTS)![d.id]);
  // The image files hold ciphertext, not the disk.
  for (const d of DISKS) expect(sha(await readFile(store.diskPath(d.id)))).not.toBe(hashes.get(POINTS)![d.id]);
  for (const p of store.points()) {
    const e = await store.exportView(p.sequence, 'os', join(dir, `export-${p.sequence}.img`));
    expect(e.sha256).toBe(hashes.get(p.sequence)!.os);
  }
  await store.close();
  console.log(`crash test: ${landed} kills, ${rolledForward} landed between "applying" and "applied" (rolled forward), ` +
    `replica seen at points ${[...seenAt].sort((a, b) => a - b).join(',')}, mean apply ${(perPoint.reduce((a, b) => a + b, 0) / perPoint.length).toFixed(1)} ms/point`);
});

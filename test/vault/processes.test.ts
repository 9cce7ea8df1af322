import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { SCHEMA_VERSION, Vault } from '../../src/vault/vault.ts';
import { useTempDir } from './temp-dir.ts';

const CHILD = fileURLToPath(new URL('./vault-child.ts', import.meta.url));
const STEPS_PER_JOB = 5; // as in vault-child.ts
const tempDir = useTempDir();
const children: ChildProcessWithoutNullStreams[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

interface Child {
  proc: ChildProcessWithoutNullStreams;
  /** Resolves with the first stdout line (already received or still to come) that satisfies `test`. */
  waitFor(test: (line: string) => boolean): Promise<string>;
  lines: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function startChild(...args: string[]): Child {
  const proc = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', CHILD, ...args], { stdio: 'pipe' });
  children.push(proc);
  const lines: string[] = [];
  let waiters: { test: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  createInterface({ input: proc.stdout }).on('line', (line) => {
    lines.push(line);
    const hit = waiters.filter((w) => w.test(line));
    waiters = waiters.filter((w) => !w.test(line));
    for (const w of hit) w.resolve(line);
  });
  const exit = once(proc, 'exit').then(([code, signal]) => {
    for (const w of waiters) w.resolve(`<exited: ${stderr}>`);
    return { code: code as number | null, signal: signal as NodeJS.Signals | null, stderr };
  });
  return {
    proc,
    lines,
    exit,
    waitFor: (test) =>
      new Promise((resolve) => {
        const seen = lines.find(test);
        if (seen !== undefined) resolve(seen);
        else if (proc.exitCode !== null || proc.signalCode !== null) resolve(`<exited: ${stderr}>`);
        else waiters.push({ test, resolve });
      }),
  };
}

function integrity(path: string): string {
  const db = new DatabaseSync(path);
  try {
    return String((db.prepare('PRAGMA integrity_check').get() as { integrity_check: string }).integrity_check);
  } finally {
    db.close();
  }
}

/** Every job in the vault must be whole: all its steps, finished, and its event. */
function expectWholeJobs(v: Vault): number {
  const jobs = v.listJobs({ limit: 100_000 });
  for (const j of jobs) {
    const full = v.getJob(j.id)!;
    expect(full.state).toBe('Succeeded');
    expect(full.steps.map((s) => s.state)).toEqual(Array(STEPS_PER_JOB).fill('Succeeded'));
  }
  const events = v.listEvents({ limit: 100_000 });
  expect(events.map((e) => e.message).sort()).toEqual(jobs.map((j) => j.id).sort());
  return jobs.length;
}

describe('vault across processes', () => {
  it('a reader sees committed writes of another process, never its open transaction, and is not blocked by it', async () => {
    const path = join(tempDir(), 'vault.db');
    const parent = Vault.open(path);
    const child = startChild('handshake', path);
    expect(await child.waitFor((l) => l === 'committed 0' || l.startsWith('<exited'))).toBe('committed 0');
    expect(parent.listJobs().map((j) => j.target)).toEqual(['ProtectedVM/vm-0']);

    await child.waitFor((l) => l === 'holding');
    // the child holds the write lock with job 1 written but not committed
    expect(parent.listJobs().map((j) => j.target)).toEqual(['ProtectedVM/vm-0']);
    expect(parent.listEvents({ limit: 10 })).toHaveLength(1);
    child.proc.stdin.write('go\n');
    await child.waitFor((l) => l === 'committed 1');
    expect(parent.listJobs().map((j) => j.target)).toEqual(['ProtectedVM/vm-1', 'ProtectedVM/vm-0']);
    expect((await child.exit).code).toBe(0);
    expect(expectWholeJobs(parent)).toBe(2);
    parent.close();
  });

  it('reads stay consistent while another process streams commits', async () => {
    const path = join(tempDir(), 'vault.db');
    Vault.open(path).close();
    const child = startChild('stream', path, '150');
    const parent = Vault.open(path);
    let reads = 0;
    while (child.proc.exitCode === null) {
      // each read is one snapshot: a job is listed only with all of its steps
      for (const j of parent.listJobs({ limit: 5 })) expect(parent.getJob(j.id)!.steps).toHaveLength(STEPS_PER_JOB);
      reads++;
      await new Promise((r) => setTimeout(r, 2));
    }
    const { code, stderr } = await child.exit;
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(reads).toBeGreaterThan(0);
    expect(expectWholeJobs(parent)).toBe(150);
    parent.close();
  });

  it('a writer killed with SIGKILL between and during transactions leaves only whole transactions', async () => {
    const path = join(tempDir(), 'vault.db');
    Vault.open(path).close();
    const child = startChild('stream', path);
    const parent = Vault.open(path);
    await child.waitFor((l) => l === 'committed 30' || l.startsWith('<exited'));
    child.proc.kill('SIGKILL');
    expect((await child.exit).signal).toBe('SIGKILL');
    const reported = child.lines.filter((l) => l.startsWith('committed ')).length;
    parent.close();

    expect(integrity(path)).toBe('ok');
    const v = Vault.open(path);
    const n = expectWholeJobs(v);
    // every reported commit is there; at most the one in flight when killed was also committed
    expect(n).toBeGreaterThanOrEqual(reported);
    expect(n).toBeLessThanOrEqual(reported + 1);
    v.close();
  });

  it('a transaction killed in the middle, with pages already spilled into the WAL, is entirely absent', async () => {
    const path = join(tempDir(), 'vault.db');
    const parent = Vault.open(path);
    parent.recordDesired('ProtectedVM', 'small', { ok: true });
    const child = startChild('hold-big', path);
    expect(await child.waitFor((l) => l === 'holding' || l.startsWith('<exited'))).toBe('holding');
    // the uncommitted transaction is on disk in the WAL (bigger than the page cache)...
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(2_000_000);
    child.proc.kill('SIGKILL');
    expect((await child.exit).signal).toBe('SIGKILL');

    // ...and none of it is visible, to the process that was open all along or to a fresh one
    expect(parent.listJobs()).toEqual([]);
    parent.close();
    expect(integrity(path)).toBe('ok');
    const v = Vault.open(path);
    expect(v.listJobs()).toEqual([]);
    expect(v.listPending()).toEqual([]);
    expect(v.getDesired('ProtectedVM', 'big')).toBeUndefined();
    expect(v.getDesired('ProtectedVM', 'small')?.spec).toEqual({ ok: true });
    // and the vault takes new writes
    v.markPending('half-done', { by: 'parent' });
    expect(v.listPending().map((m) => m.payload)).toEqual([{ by: 'parent' }]);
    v.close();
  });

  it('several processes opening a new vault at once migrate it exactly once', async () => {
    const path = join(tempDir(), 'sub', 'vault.db');
    const kids = [0, 1, 2, 3].map(() => startChild('open', path));
    const results = await Promise.all(kids.map((k) => k.exit));
    for (const [i, r] of results.entries()) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(kids[i].lines).toEqual([`version ${SCHEMA_VERSION}`]);
    }
    expect(integrity(path)).toBe('ok');
  });
});

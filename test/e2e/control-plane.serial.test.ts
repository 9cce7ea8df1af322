// The control plane under its own faults, through the real `drsite` CLI on a copy of the
// quickstart: two reconcilers on one vault (the vault's reconcile lease lets one act, the other
// refuses naming the holder, or waits with --wait-lock), `drsite run` killed with SIGKILL three
// times in a planned failover (the plan finishes once, every step once, one reversal on the
// agents), and a damaged vault file (refused with one line saying how to rebuild; the rebuilt
// vault converges from the sites without failing over again).
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, renameSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { loadDesiredState } from '../../src/config/index.ts';
import { RECONCILE_LEASE } from '../../src/reconciler/reconcile-lease.ts';
import { openSites } from '../../src/sites/open-sites.ts';
import type { JobType, Vault } from '../../src/vault/vault.ts';
import { DRSITE } from '../cli/run-cli.ts';
import { planJob, quickstart, startRun, vmStatus, waitFor, type Quickstart, type Running } from './helpers.ts';

// Test 1 starts from nothing; tests 2 and 3 share a second copy that `drsite run` protects
// (an apply that exits while the initial copy runs leaves it for a later pass to finish).
let q: Quickstart;
const copies: Quickstart[] = [];
const runs: Running[] = [];
beforeAll(async () => {
  copies.push((q = await quickstart()));
});
afterAll(async () => {
  for (const r of runs) await r.stop('SIGKILL');
  for (const c of copies) c.cleanup();
});

/** The targets of every job of this type, sorted: one entry per time it ran. */
const targetsOf = (v: Vault, type: JobType) => v.listJobs({ type, limit: 500 }).map((j) => j.target).sort();

/** A one-line error for an operator: no stack frames. */
function expectOneLine(stderr: string): void {
  const lines = stderr.trim().split('\n');
  expect(lines, stderr).toHaveLength(1);
  expect(stderr).not.toMatch(/^\s+at /m);
}

/** `drsite <args>` as a process whose output can be watched while it runs. */
function spawnCli(args: string[]) {
  const child = spawn(process.execPath, [DRSITE, ...args, '--state-dir', q.state], { cwd: q.root, env: { ...process.env, ...q.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  return { output: () => out, code };
}

test('two applies at once: one reconciles, the other refuses naming the holder; --wait-lock waits; every step runs once', async () => {
  const [a, b] = await Promise.all([q.cli(['apply', 'qs']), q.cli(['apply', 'qs'])]);
  expect([a.code, b.code].sort(), a.stderr + b.stderr).toEqual([0, 1]);
  const loser = a.code === 1 ? a : b;
  expect(loser.stderr).toMatch(/^error \(invalid-state\): another drsite \(pid \d+, `drsite apply`, since \d{4}-\d\d-\d\dT[\d:.]+Z\) is reconciling \S*vault\.db; .*--wait-lock <duration>/);
  expect(loser.stderr).toContain(q.vault);
  expectOneLine(loser.stderr);
  // The loser refused before it planned or started anything.
  expect(loser.stdout).not.toMatch(/Plan:|EnableProtection/);
  q.readVault((v) => {
    expect(targetsOf(v, 'EnableProtection')).toEqual(['ProtectedVM/db-01', 'ProtectedVM/web-01']);
    expect(targetsOf(v, 'InitialReplication')).toEqual(['ProtectedVM/db-01', 'ProtectedVM/web-01']);
    expect(v.getLease(RECONCILE_LEASE)).toBeUndefined(); // released on exit
  });

  // A holder that is alive (this test process): refused at once; with --wait-lock, waited for.
  const holder = { pid: process.pid, host: hostname(), command: 'drsite run (test)' };
  q.readVault((v) => expect(v.takeLease(RECONCILE_LEASE, holder, 60_000, () => false).taken).toBe(true));
  const refused = await q.cli(['apply', 'qs']);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toContain(`another drsite (pid ${process.pid}, \`drsite run (test)\`, since `);
  expectOneLine(refused.stderr);
  const waiting = spawnCli(['apply', 'qs', '--wait-lock', '60s']);
  await waitFor('the second apply to wait', () => /waiting up to \d+s for the drsite reconciling/.test(waiting.output()), 30_000, waiting.output);
  q.readVault((v) => expect(v.releaseLease(RECONCILE_LEASE, holder)).toBe(true));
  expect(await waiting.code, waiting.output()).toBe(0);
  q.readVault((v) => {
    expect(targetsOf(v, 'EnableProtection')).toEqual(['ProtectedVM/db-01', 'ProtectedVM/web-01']);
    expect(targetsOf(v, 'InitialReplication')).toEqual(['ProtectedVM/db-01', 'ProtectedVM/web-01']);
  });
}, 60_000);

test('drsite run killed -9 three times in a planned failover: the plan finishes once, each step once, one reversal', async () => {
  copies.push((q = await quickstart()));
  let run = startRun(q);
  runs.push(run);
  await waitFor('both VMs Replicating', () => {
    const st = q.readVault(vmStatus);
    return st.length === 2 && st.every((s) => s.state === 'Replicating');
  }, 60_000, run.output);

  const job = () => q.readVault((v) => planJob(v, 'move-1'));
  const child = (type: string, vm: string) => job()?.children.find((c) => c.type === type && c.target === `ProtectedVM/${vm}`);
  // Three moments: the plan just started; db-01's planned failover under way (its first call
  // done); web-01's planned failover started (group 1 done). Each restarted run is killed only
  // once it has taken the lease over, so each of them resumed the plan.
  const kills: [string, () => boolean | undefined][] = [
    ['the plan job to be Running', () => job()?.state === 'Running'],
    ["db-01's planned failover to be under way", () => child('PlannedFailover', 'db-01')?.steps.some((s) => s.state === 'Succeeded')],
    ["web-01's planned failover to start", () => child('PlannedFailover', 'web-01') !== undefined],
  ];
  q.setFailover(['id: move-1', 'type: planned', 'commit: true']);
  for (const [what, ready] of kills) {
    if (runs.length > 1) await waitFor('the restarted run to take the lease over', () => /took over the reconcile lease/.test(run.output()), 30_000, run.output);
    await waitFor(what, ready, 60_000, run.output);
    expect(await run.stop('SIGKILL')).toBe(null);
    const j = job()!;
    expect(j.state, `killed once ${what}: ${JSON.stringify(j.error)}\n${run.output().slice(-3000)}`).toBe('Running');
    run = startRun(q);
    runs.push(run);
  }
  const ended = await waitFor('move-1 to end', () => {
    const j = job();
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, 60_000, run.output);
  expect(ended.state, JSON.stringify(ended.error)).toBe('Succeeded');
  await waitFor('both VMs Replicating site-b -> site-a', () => {
    const st = q.readVault(vmStatus);
    return st.length === 2 && st.every((s) => s.state === 'Replicating' && s.direction?.primary === 'site-b' && s.direction.replica === 'site-a');
  }, 60_000, run.output);
  // Each restart found the dead holder's lease and took it over at once.
  for (const r of runs.slice(1)) expect(r.output()).toMatch(/took over the reconcile lease of \S+ from pid \d+, `drsite run --poll \S+`/);
  expect(await run.stop('SIGINT')).toBe(0);

  q.readVault((v) => {
    const plans = v.listJobs({ type: 'RecoveryPlan', limit: 100 }).filter((j) => (j.input as { failoverId?: string }).failoverId === 'move-1');
    expect(plans).toHaveLength(1);
    for (const type of ['PlannedFailover', 'CommitFailover', 'ReverseReplication'] as const) {
      expect(targetsOf(v, type), type).toEqual(['ProtectedVM/db-01', 'ProtectedVM/web-01']);
    }
  });
  expect(ended.children.map((c) => [c.type, c.target, c.state])).toEqual([
    ['PlannedFailover', 'ProtectedVM/db-01', 'Succeeded'],
    ['CommitFailover', 'ProtectedVM/db-01', 'Succeeded'],
    ['ReverseReplication', 'ProtectedVM/db-01', 'Succeeded'],
    ['PlannedFailover', 'ProtectedVM/web-01', 'Succeeded'],
    ['CommitFailover', 'ProtectedVM/web-01', 'Succeeded'],
    ['ReverseReplication', 'ProtectedVM/web-01', 'Succeeded'],
  ]);
  for (const c of ended.children) expect(c.steps.every((s) => s.state === 'Succeeded'), `${c.type} ${c.target}`).toBe(true);
  expect(ended.steps.map((s) => [s.name, s.state])).toEqual([
    ['group-1/db-01/1-planned-failover', 'Succeeded'],
    ['group-1/db-01/2-commit-failover', 'Succeeded'],
    ['group-1/db-01/3-reverse-replication', 'Succeeded'],
    ['group-1/after/record-database-up', 'Succeeded'],
    ['group-2/before/record-web-starting', 'Succeeded'],
    ['group-2/web-01/1-planned-failover', 'Succeeded'],
    ['group-2/web-01/2-commit-failover', 'Succeeded'],
    ['group-2/web-01/3-reverse-replication', 'Succeeded'],
    ['group-2/after/record-web-up', 'Succeeded'],
  ]);
  // Every script of the plan ran exactly once.
  const scripts = q.actions().filter((l) => l.includes('DRSITE_FAILOVER_ID=move-1')).map((l) => /args=\[([^\]]*)\]/.exec(l)?.[1]);
  expect(scripts).toEqual(['database-up', 'web-starting', 'web-up']);
  await expectOneReversal();
}, 150_000);

/** On the agents themselves: each VM has exactly its declared relationship's first reverse (.r1) replicating site-b -> site-a, and no later one. */
async function expectOneReversal(): Promise<void> {
  const loaded = await loadDesiredState(['qs'], { cwd: q.root });
  if (!loaded.ok) throw new Error('quickstart does not load');
  const sites = await openSites(loaded.state, { stateDir: q.state, cwd: q.root, schedule: false });
  try {
    const a = await sites.get('site-a').relationships();
    const b = await sites.get('site-b').relationships();
    for (const vm of ['db-01', 'web-01']) {
      const ids = [...a, ...b].map((r) => r.id).filter((id) => id.startsWith(`rel-${vm}.`) || id === `rel-${vm}`);
      expect(ids.filter((id) => /\.r\d+$/.test(id)).sort(), vm).toEqual([`rel-${vm}.r1`, `rel-${vm}.r1`]);
      expect(b.find((r) => r.id === `rel-${vm}.r1`)).toMatchObject({ role: 'Primary', state: 'Replicating', peer: 'site-a' });
      expect(a.find((r) => r.id === `rel-${vm}.r1`)).toMatchObject({ role: 'Replica', peer: 'site-b' });
    }
  } finally {
    await sites.close();
  }
}

test('a damaged vault is refused with one line naming the file and the rebuild; the rebuilt vault converges without failing over again', async () => {
  const good = `${q.vault}.good`;
  expect(existsSync(`${q.vault}-wal`)).toBe(false); // closed cleanly: the whole vault is in the one file
  copyFileSync(q.vault, good);
  const size = statSync(good).size;
  const pageSize = 4096;
  expect(size).toBeGreaterThan(4 * pageSize);
  const damage: [string, () => void][] = [
    ['truncated to half', () => truncateSync(q.vault, Math.floor(size / 2 / pageSize) * pageSize)],
    ['header overwritten', () => {
      const bytes = readFileSync(q.vault);
      bytes.fill(0x5a, 0, 100);
      writeFileSync(q.vault, bytes);
    }],
    ['a page overwritten', () => {
      const bytes = readFileSync(q.vault);
      bytes.fill(0xa5, 2 * pageSize, 3 * pageSize);
      writeFileSync(q.vault, bytes);
    }],
  ];
  const refusal = (stderr: string) => {
    expect(stderr).toContain(`error (invalid-state): vault ${q.vault} is damaged (`);
    expect(stderr).toMatch(/move it aside, with its -wal and -shm files if any .*the next drsite apply rebuilds protection state from the sites/);
    expectOneLine(stderr);
  };
  for (const [what, harm] of damage) {
    copyFileSync(good, q.vault);
    harm();
    const status = await q.cli(['status']);
    expect(status.code, what).toBe(1);
    refusal(status.stderr);
  }
  // (the last damage is still in place) apply refuses before it acts; with --debug, the stack.
  const apply = await q.cli(['apply', 'qs']);
  expect(apply.code).toBe(1);
  refusal(apply.stderr);
  expect(apply.stdout).not.toMatch(/Plan:/);
  expect((await q.cli(['status', '--debug'])).stderr).toMatch(/^\s+at /m);
  // run exits once with the error instead of retrying passes against a vault it cannot read.
  const run = await q.cli(['run', 'qs', '--until', 'converged']);
  expect(run.code).toBe(1);
  refusal(run.stderr);
  expect(run.stdout).not.toMatch(/pass failed|retrying/);

  // Do what the message says, then apply: the sites' relationships are adopted as they are, the
  // declared failover move-1 is taken as done, and nothing is enabled or failed over again.
  renameSync(q.vault, `${q.vault}.damaged`);
  for (const s of ['-wal', '-shm']) if (existsSync(q.vault + s)) renameSync(q.vault + s, `${q.vault}.damaged${s}`);
  const rebuilt = await q.cli(['apply', 'qs']);
  expect(rebuilt.code, rebuilt.stdout + rebuilt.stderr).toBe(0);
  expect(rebuilt.stdout).toMatch(/failover move-1 \(planned\), declared before, is taken as done and not run again/);
  q.readVault((v) => {
    const types = v.listJobs({ limit: 500 }).map((j) => j.type);
    for (const t of ['EnableProtection', 'InitialReplication', 'RecoveryPlan', 'PlannedFailover', 'UnplannedFailover', 'CommitFailover', 'ReverseReplication', 'DisableProtection'] as const) {
      expect(types, t).not.toContain(t);
    }
    expect(v.getLastAction('RecoveryPlan', 'quickstart')).toMatchObject({ id: 'move-1', state: 'Cancelled' });
    expect(vmStatus(v).map((s) => [s.name, s.state, s.direction])).toEqual([
      ['db-01', 'Replicating', { primary: 'site-b', replica: 'site-a' }],
      ['web-01', 'Replicating', { primary: 'site-b', replica: 'site-a' }],
    ]);
  });
  const plan = await q.cli(['plan', 'qs', '--detailed-exitcode']);
  expect(plan.code, plan.stdout + plan.stderr).toBe(0);
  await expectOneReversal();
}, 90_000);

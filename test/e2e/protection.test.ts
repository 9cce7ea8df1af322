// The main job end to end: `drsite run <quickstart> --until converged` on a fresh state dir
// creates the sample VMs, protects them and ends with both Replicating/Normal and every replica
// byte-identical to its primary at the last recovery point; then a policy edit is one `~` change
// per VM that apply converges.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { loadDesiredState } from '../../src/config/index.ts';
import { openSites } from '../../src/sites/open-sites.ts';
import { quickstart, vmStatus, type Quickstart } from './helpers.ts';

let q: Quickstart;
beforeAll(async () => {
  q = await quickstart();
});
afterAll(() => q?.cleanup());

test('fresh state: run --until converged protects both VMs; replicas equal the primaries at the last point', async () => {
  const r = await q.cli(['run', 'qs', '--until', 'converged']);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/converged in [\d.]+s/);
  const st = q.readVault(vmStatus);
  expect(st.map((s) => [s.name, s.state, s.health])).toEqual([
    ['db-01', 'Replicating', 'Normal'],
    ['web-01', 'Replicating', 'Normal'],
  ]);
  const conds = q.readVault((v) => v.getStatus('ProtectedVM', 'web-01')!.conditions.map((c) => [c.type, c.status]));
  expect(conds).toEqual([['Protected', 'True'], ['Ready', 'True']]);

  // The run stopped the workload and shipped a last cycle: compare each primary disk, at rest,
  // with the replica's newest recovery point through the agent API (sites restarted in-process).
  const loaded = await loadDesiredState(['qs'], { cwd: q.root });
  if (!loaded.ok) throw new Error('quickstart does not load');
  const sites = await openSites(loaded.state, { stateDir: q.state, cwd: q.root, schedule: false });
  try {
    const a = sites.get('site-a');
    const b = sites.get('site-b');
    // The agent reports each disk's image file too (the files hypervisor's vm.json).
    const vms = (await a.vms()) as unknown as { name: string; disks: { name: string; file: string; size: number }[] }[];
    expect(vms.map((v) => v.name).sort()).toEqual(['db-01', 'web-01']);
    for (const vm of vms) {
      expect(vm.disks.map((d) => [d.name, d.size])).toEqual([['os', 64 << 20], ['data', 32 << 20]]);
      const id = `rel-${vm.name}`;
      const points = await b.recoveryPoints(id);
      const last = points.at(-1)!;
      for (const d of vm.disks) {
        const local = createHash('sha256').update(readFileSync(join(q.state, 'sites', 'site-a', 'vms', vm.name, d.file))).digest('hex');
        const remote = await b.pointDigest(id, last.sequence, d.name);
        expect(remote.sha256, `${vm.name}/${d.name} at point ${last.sequence}`).toBe(local);
      }
    }
  } finally {
    await sites.close();
  }
}, 90_000);

test('policy 30s -> 5m: plan shows one ~ change per VM, apply converges, plan shows no changes', async () => {
  const file = join(q.qs, 'policy.yaml');
  writeFileSync(file, readFileSync(file, 'utf8').replace('frequency: 30s', 'frequency: 5m'));
  const before = await q.cli(['plan', 'qs']);
  expect(before.code, before.stderr).toBe(0);
  const changes = before.stdout.split('\n').filter((l) => /^\s*~ [a-z-]+ ProtectedVM/.test(l));
  expect(changes).toHaveLength(2);
  expect(changes[0]).toMatch(/change-policy ProtectedVM\/db-01/);
  expect(changes[1]).toMatch(/change-policy ProtectedVM\/web-01/);
  expect(before.stdout).toMatch(/frequency/);

  const apply = await q.cli(['apply', 'qs']);
  expect(apply.code, apply.stdout + apply.stderr).toBe(0);
  expect(apply.stdout).toMatch(/ChangePolicy db-01: now every-30s/);

  const after = await q.cli(['plan', 'qs']);
  expect(after.code, after.stderr).toBe(0);
  expect(after.stdout).toMatch(/No changes/);
  const jobs = q.readVault((v) => v.listJobs({ type: 'ChangePolicy' }).map((j) => [j.target, j.state]));
  expect(jobs.sort()).toEqual([['ProtectedVM/db-01', 'Succeeded'], ['ProtectedVM/web-01', 'Succeeded']]);
}, 90_000);

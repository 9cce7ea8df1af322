// Declarations that reach past the quickstart, converged by the real CLI: an extended replica on a
// third site (Primary -> Replica -> ExtendedReplica) and a replica storage path that moves.
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { freePort } from '../agent/cluster.ts';
import { quickstart, type Quickstart } from './helpers.ts';

let q: Quickstart;
beforeAll(async () => {
  q = await quickstart();
  // Not one of the quickstart's ports (those are free too until its sites start).
  let pc = await freePort();
  while (readFileSync(join(q.qs, 'sites.yaml'), 'utf8').includes(`port: ${pc}`)) pc = await freePort();
  appendFileSync(
    join(q.qs, 'sites.yaml'),
    ['---', 'apiVersion: drsite.dev/v1', 'kind: Site', 'metadata:', '  name: site-c', 'spec:', '  type: host', '  replicaServer:', '    enabled: true', `    port: ${pc}`, '    allowedPrimaries:', '      - server: site-b', ''].join('\n'),
  );
  appendFileSync(
    join(q.qs, 'policy.yaml'),
    ['---', 'apiVersion: drsite.dev/v1', 'kind: ReplicationPolicy', 'metadata:', '  name: every-5m', 'spec:', '  frequency: 5m', ''].join('\n'),
  );
  const vms = readFileSync(join(q.qs, 'vms.yaml'), 'utf8');
  writeFileSync(join(q.qs, 'vms.yaml'), vms.replace('  policy: every-30s\n', '  policy: every-30s\n  extendedReplica:\n    site: site-c\n    policy: every-5m\n'));
});
afterAll(() => q?.cleanup());

interface StatusRow {
  name: string;
  relationship: { roles: Record<string, string>; state: string; replicaStoragePath?: string } | null;
}

test('an extended replica on a third site converges; moving replica storage is one ~ change', async () => {
  const r = await q.cli(['run', 'qs', '--until', 'converged'], 120_000);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  const rows = JSON.parse((await q.cli(['status', '--output', 'json'])).stdout) as StatusRow[];
  const web = rows.find((x) => x.name === 'web-01')!.relationship!;
  expect(web.state).toBe('Replicating');
  expect(web.roles).toEqual({ 'site-a': 'Primary', 'site-b': 'Replica', 'site-c': 'ExtendedReplica' });

  // Move db-01's replica storage on site-b.
  const target = join(q.root, 'moved-replicas');
  const vms = readFileSync(join(q.qs, 'vms.yaml'), 'utf8');
  writeFileSync(join(q.qs, 'vms.yaml'), vms.replace(/(name: db-01\nspec:\n)/, `$1  replicaStoragePath: ${target}\n`));
  const plan = await q.cli(['plan', 'qs']);
  expect(plan.stdout).toMatch(/~ move-replica-storage ProtectedVM\/db-01/);
  expect(plan.stdout).toMatch(/Plan: 0 to add, 1 to change, 0 to remove/);
  const applied = await q.cli(['apply', 'qs']);
  expect(applied.code, applied.stdout + applied.stderr).toBe(0);
  const again = await q.cli(['plan', 'qs']);
  expect(again.stdout, again.stdout + again.stderr).toMatch(/No changes\./);
  const rows2 = JSON.parse((await q.cli(['status', '--output', 'json'])).stdout) as StatusRow[];
  expect(rows2.find((x) => x.name === 'db-01')!.relationship!.replicaStoragePath).toBe(target);
}, 180_000);

// examples/qemu end to end through the reconciler: `drsite run` creates web-01 as a real guest
// (the test guest under QEMU) on site-a and protects it; a planned failover with commit declared in
// the plan shuts it down through QMP, boots it on site-b from its replica with site-b's address and
// replicates back; a failback declared the same way brings it home, where it boots again with
// what it wrote on site-b.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { testGuest } from '../agent/hypervisor/qemu/guest.ts';
import { planJob, quickstart, startRun, vmStatus, waitFor, type Quickstart, type Running } from './helpers.ts';

let q: Quickstart;
let run: Running;
beforeAll(async () => {
  await testGuest();
  q = await quickstart('qemu');
  run = startRun(q);
  await waitFor('web-01 Replicating', () => q.readVault(vmStatus).some((s) => s.state === 'Replicating'), 120_000, run.output);
}, 180_000);
afterAll(async () => {
  await run?.stop();
  q?.cleanup();
});

const serial = (site: string) => join(q.state, 'sites', site, 'vms', 'web-01', 'serial.log');
const read = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : '');
const booted = (site: string) => waitFor(`web-01 booted on ${site}`, () => /DRSITE booted (.+); (\d+) lines in \/visits.log/.exec(read(serial(site))) ?? undefined, 90_000, run.output);
const done = (id: string) =>
  waitFor(`failover ${id} to end`, () => {
    const j = q.readVault((v) => planJob(v, id));
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, 240_000, run.output);

test('planned failover of a real guest through the plan, then failback', async () => {
  const first = await booted('site-a');
  expect(first[1]).toBe('without a seed disk (on its own site)');
  // Let it write a few visits, and let a cycle or two ship them.
  await waitFor('a visit written', () => /DRSITE/.test(read(serial('site-a'))), 10_000);
  await new Promise((r) => setTimeout(r, 6000));

  q.setFailover(['id: move-1', 'type: planned', 'commit: true']);
  const job = await done('move-1');
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
  expect(job.children.map((c) => c.type)).toEqual(['PlannedFailover', 'CommitFailover', 'ReverseReplication']);
  expect(job.children[0].steps.map((s) => s.name)).toEqual(['power-off', 'prepare-planned-failover', 'failover']);
  // site-b's guest boots with its seed and site-a's visits. (site-a's copy of the VM, shut down
  // through QMP by the power-off step, went into its replica when replication reversed.)
  expect(existsSync(join(q.state, 'sites', 'site-a', 'vms', 'web-01'))).toBe(false);
  const onB = await booted('site-b');
  expect(onB[1]).toBe('web-01');
  const visitsAtFailover = Number(onB[2]);
  expect(visitsAtFailover).toBeGreaterThan(0);
  expect(read(serial('site-b'))).toMatch(/DRSITE seed addr eth0 \S+ 10\.20\.0\.11\/24/);
  await waitFor('replicating site-b -> site-a', () => q.readVault(vmStatus).every((s) => s.state === 'Replicating' && s.direction?.primary === 'site-b'), 60_000, run.output);
  await new Promise((r) => setTimeout(r, 6000)); // a visit or more on site-b

  q.setFailover(['id: home-1', 'type: failback']);
  const back = await done('home-1');
  expect(back.state, JSON.stringify(back.error)).toBe('Succeeded');
  const home = await booted('site-a');
  expect(Number(home[2])).toBeGreaterThan(visitsAtFailover); // what it wrote on site-b came home
  await waitFor('replicating site-a -> site-b again', () => q.readVault(vmStatus).every((s) => s.state === 'Replicating' && s.direction?.primary === 'site-a'), 60_000, run.output);
}, 600_000);

// examples/libvirt end to end through the real CLI and reconciler: examples/libvirt/setup.ts
// defines the networks and the domain web-01 with plain virsh (drsite creates none of it);
// `drsite run` protects it; a planned failover with commit declared in the plan shuts it down
// through libvirt, starts dr-web-01 on site-b from its replica (the seed disk's address, MAC
// kept), commits and replicates back; a failback declared the same way restores the original
// web-01 on site-a, which boots again, and site-b's copy is undefined. At each step `virsh list`
// shows exactly one running copy.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { planJob, quickstart, startRun, vmStatus, waitFor, type Quickstart, type Running } from '../../../e2e/helpers.ts';
import { testGuest, waitForLine } from '../qemu/guest.ts';
import { domState, ensureLibvirtd, runningDomains, virsh } from './libvirt.ts';

const run = promisify(execFile);
const SETUP = new URL('../../../../examples/libvirt/setup.ts', import.meta.url).pathname;
const CONSOLE_A = '/var/lib/libvirt/images/drsite-example/web-01.console.log';
let q: Quickstart | undefined;
let drsite: Running | undefined;

beforeAll(async () => {
  await ensureLibvirtd();
  await testGuest();
  await run(process.execPath, [SETUP, '--down']);
  await run(process.execPath, [SETUP]);
  q = await quickstart('libvirt');
  drsite = startRun(q);
  await waitFor('web-01 Replicating', () => q!.readVault(vmStatus).some((s) => s.state === 'Replicating'), 120_000, drsite.output);
}, 240_000);

afterAll(async () => {
  await drsite?.stop();
  await ensureLibvirtd();
  await run(process.execPath, [SETUP, '--down']).catch(() => {});
  // The embedded sites' default runDirs (named by a hash of each site's VM folder).
  for (const site of ['site-a', 'site-b']) {
    if (q) await rm(join('/var/lib/libvirt/drsite', createHash('sha256').update(resolve(q.state, 'sites', site, 'vms')).digest('hex').slice(0, 12)), { recursive: true, force: true });
  }
  q?.cleanup();
}, 120_000);

const done = (id: string) =>
  waitFor(`failover ${id} to end`, () => {
    const j = q!.readVault((v) => planJob(v, id));
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, 240_000, drsite!.output);
const copies = async () => (await runningDomains()).filter((d) => d.includes('web-01'));

test('planned failover with commit, then failback, of an existing libvirt domain through the plan', async () => {
  expect(await copies()).toEqual(['web-01']);
  await new Promise((r) => setTimeout(r, 3000)); // a cycle or two ship the guest's writes

  q!.setFailover(['id: move-1', 'type: planned', 'commit: true']);
  const job = await done('move-1');
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
  expect(job.children.map((c) => c.type)).toEqual(['PlannedFailover', 'CommitFailover', 'ReverseReplication']);
  expect(await copies()).toEqual(['dr-web-01']);
  expect(await domState('web-01')).toBe('shut off'); // still defined on site-a, off
  expect(await virsh('domiflist', 'dr-web-01')).toMatch(/drsite-lan-b\s+virtio\s+52:54:00:d5:00:01/);
  await waitFor('replicating site-b -> site-a', () => q!.readVault(vmStatus).every((s) => s.state === 'Replicating' && s.direction?.primary === 'site-b'), 90_000, drsite!.output);
  await new Promise((r) => setTimeout(r, 3000));

  q!.setFailover(['id: home-1', 'type: failback']);
  const back = await done('home-1');
  expect(back.state, JSON.stringify(back.error)).toBe('Succeeded');
  // The original domain runs again (its console: a fresh boot, without a seed disk), site-b's copy is gone.
  await waitForLine(CONSOLE_A, /DRSITE seed none/, 90_000);
  expect(await copies()).toEqual(['web-01']);
  expect(await domState('dr-web-01')).toBe('absent');
  await waitFor('replicating site-a -> site-b again', () => q!.readVault(vmStatus).every((s) => s.state === 'Replicating' && s.direction?.primary === 'site-a'), 90_000, drsite!.output);
}, 600_000);

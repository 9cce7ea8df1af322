// The executor's journal with a vault (SQLite and etcd) and a real agent over mutual TLS: calls are skipped
// once journaled, a pending mark left by a killed process is resolved by looking at the site
// (never by calling blindly), script actions are taken from their on-disk journal after a restart.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runJournaledCalls, pendingKey, type SiteCall } from '../../src/reconciler/journal.ts';
import { parseRelationshipId, relationshipId } from '../../src/reconciler/relationship-ids.ts';
import { resumeScript, runScript } from '../../src/reconciler/script-action.ts';
import { HostSite } from '../../src/sites/host-site.ts';
import type { CreateVmRequest } from '../../src/transport/agent-api.ts';
import { loadCertBundle } from '../../src/transport/certs.ts';
import { Vault } from '../../src/vault/vault.ts';
import { Cluster, OPERATOR } from '../agent/cluster.ts';
import { BACKENDS, useVaultPlaces } from '../vault/backends.ts';

let cluster: Cluster;
let site: HostSite;
let dir: string;
let vault: Vault;
const place = useVaultPlaces();

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }]);
  await cluster.startInProcess('host-a');
  site = new HostSite({ name: 'host-a', endpoint: cluster.host('host-a').url, tls: await loadCertBundle(cluster.certs, OPERATOR) });
  dir = mkdtempSync(join(tmpdir(), 'drsite-journal-'));
});
afterAll(async () => {
  await site?.close();
  await cluster?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const createVm = (name: string): SiteCall => ({
  name: `create-${name}`,
  site,
  run: (s) => s.createVm({ name, disks: [{ name: 'os', size: 1 << 20 }] } satisfies CreateVmRequest),
  done: async () => (await site.vms()).some((v) => v.name === name),
});

// One agent for both backends: each backend's VMs carry its name so neither finds the other's.
describe.each(BACKENDS)('journal on a %s vault', (backend) => {
  beforeAll(() => {
    vault = Vault.open(place(backend));
  });
  afterAll(() => vault?.close());
  const vm = (n: string) => `${n}-${backend}`;

  test('journaled calls: done once, skipped when the job is resumed, no marks left', async () => {
    const job = vault.createJob({ type: 'EnableProtection', target: 'ProtectedVM/j1' });
    await runJournaledCalls(vault, job.id, [createVm(vm('j1'))]);
    expect(vault.getJob(job.id)!.steps.map((s) => [s.name, s.state, s.attempt])).toEqual([[`create-${vm('j1')}`, 'Succeeded', 1]]);
    expect(vault.listPending()).toEqual([]);
    // Creating the same VM again would fail on the agent: the resumed job must not call again.
    await runJournaledCalls(vault, job.id, [createVm(vm('j1'))]);
    expect(vault.getJob(job.id)!.steps[0].attempt).toBe(1);
  });

  test('a pending mark whose call landed before the crash is resolved by looking, not by calling again', async () => {
    const job = vault.createJob({ type: 'EnableProtection', target: 'ProtectedVM/j2' });
    // What a process killed right after the agent answered leaves: a Running step and its mark.
    vault.startStep(job.id, `create-${vm('j2')}`);
    vault.markPending(pendingKey(job.id, `create-${vm('j2')}`), {});
    await site.createVm({ name: vm('j2'), disks: [{ name: 'os', size: 1 << 20 }] });
    await runJournaledCalls(vault, job.id, [createVm(vm('j2'))]);
    const step = vault.getJob(job.id)!.steps[0];
    expect(step).toMatchObject({ state: 'Succeeded', attempt: 2, output: { resolved: 'found already done after a restart' } });
    expect(vault.getPending(pendingKey(job.id, `create-${vm('j2')}`))).toBeUndefined();
  });

  test('a pending mark whose call never landed: the call is made', async () => {
    const job = vault.createJob({ type: 'EnableProtection', target: 'ProtectedVM/j3' });
    vault.startStep(job.id, `create-${vm('j3')}`);
    vault.markPending(pendingKey(job.id, `create-${vm('j3')}`), {});
    await runJournaledCalls(vault, job.id, [createVm(vm('j3'))]);
    expect(vault.getJob(job.id)!.steps[0]).toMatchObject({ state: 'Succeeded', attempt: 2 });
    expect((await site.vms()).map((v) => v.name)).toContain(vm('j3'));
  });

  test('an agent error fails the step with its typed error and clears the mark', async () => {
    const job = vault.createJob({ type: 'EnableProtection', target: 'ProtectedVM/j1' });
    await expect(runJournaledCalls(vault, job.id, [createVm(vm('j1'))])).rejects.toThrow();
    const step = vault.getJob(job.id)!.steps[0];
    expect(step.state).toBe('Failed');
    expect(step.error?.code).toBeDefined();
    expect(vault.listPending()).toEqual([]);
  });
});

test('script journal: completed runs are taken, not re-run; a run that never completed is reported as such', async () => {
  const log = join(dir, 'script.log');
  const script = join(dir, 's.sh');
  writeFileSync(script, `#!/bin/sh\necho "$1 $DRSITE_X" >> ${log}\necho out; echo err >&2; exit $2\n`, { mode: 0o755 });
  const ok = await runScript(join(dir, 'j', '1'), { path: script, args: ['one', '0'], timeoutMs: 10_000, env: { DRSITE_X: 'x' }, cwd: dir });
  expect(ok).toMatchObject({ exitCode: 0, timedOut: false, stdoutTail: 'out\n', stderrTail: 'err\n' });
  expect(await resumeScript(join(dir, 'j', '1'), 1000)).toMatchObject({ exitCode: 0, resumed: true });
  const bad = await runScript(join(dir, 'j', '2'), { path: script, args: ['two', '3'], timeoutMs: 10_000, env: {}, cwd: dir });
  expect(bad.exitCode).toBe(3);
  const slow = await runScript(join(dir, 'j', '3'), { path: '/bin/sleep', args: ['5'], timeoutMs: 200, env: {}, cwd: dir });
  expect(slow).toMatchObject({ exitCode: null, timedOut: true });
  expect(await resumeScript(join(dir, 'j', '3'), 1000)).toBeUndefined();
  expect(await resumeScript(join(dir, 'j', 'never'), 1000)).toBeUndefined();
});

test('relationship ids round-trip and cannot be confused across ProtectedVM names', () => {
  expect(relationshipId('web-01')).toBe('rel-web-01');
  expect(relationshipId('web-01', 2)).toBe('rel-web-01.r2');
  expect(parseRelationshipId('rel-web-01.r2')).toEqual({ protectedVm: 'web-01', k: 2 });
  expect(parseRelationshipId('rel-web-r1')).toEqual({ protectedVm: 'web-r1', k: 0 });
  expect(parseRelationshipId('vm1')).toBeUndefined();
});

// "Normal" means the VM works: examples/qemu through the real CLI, with a second sample VM whose
// kernel hangs (never prints, no guest agent), as a Linux kernel does under a KVM that cannot run
// it. `drsite run` starts both on site-a with `accel: auto` (the probe boots each VM's kernel, and
// falls back to TCG for the one that hangs); `drsite status` shows the hung one Warning with reason
// guest-not-booting once its boot timeout (set to 15s here) passes, while web-01, the test guest,
// boots and carries no such reason.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { StatusRow } from '../../src/cli/status.ts';
import { testGuest } from '../agent/hypervisor/qemu/guest.ts';
import { writeHangKernel } from '../agent/hypervisor/qemu/hang-kernel.ts';
import { quickstart, startRun, waitFor, type Quickstart, type Running } from './helpers.ts';

let q: Quickstart;
let run: Running;
beforeAll(async () => {
  await testGuest();
  q = await quickstart('qemu');
  await writeHangKernel(join(q.qs, 'hang.mb'));
  const sites = join(q.qs, 'sites.yaml');
  // accel auto, as the example has it (the helper sets tcg): the probe decides per kernel. A kernel
  // that hangs fails it under any accelerator, so stuck-01 always runs under TCG.
  writeFileSync(sites, readFileSync(sites, 'utf8').replace(/accel: tcg/g, 'accel: auto').replace(/bootTimeout: 45s/g, 'bootTimeout: 15s'));
  const sample = JSON.parse(readFileSync(join(q.qs, 'sample-vms.json'), 'utf8')) as { vms: unknown[] };
  sample.vms.push({ name: 'stuck-01', disks: [{ name: 'os', size: '16MiB' }], boot: { kernel: 'hang.mb' } });
  writeFileSync(join(q.qs, 'sample-vms.json'), JSON.stringify(sample, null, 2));
  const vms = readFileSync(join(q.qs, 'vms.yaml'), 'utf8');
  writeFileSync(join(q.qs, 'vms.yaml'), `${vms.trimEnd()}\n---\n${[
    'apiVersion: drsite.dev/v1', 'kind: ProtectedVM', 'metadata:', '  name: stuck-01', 'spec:', '  vm: stuck-01', '  primary: site-a', '  replica: site-b', '  policy: every-30s',
  ].join('\n')}\n`);
  run = startRun(q);
}, 180_000);
afterAll(async () => {
  await run?.stop();
  q?.cleanup();
});

const status = async (): Promise<StatusRow[]> => {
  const r = await q.cli(['status', '--output', 'json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as StatusRow[];
};
const rel = (rows: StatusRow[], name: string) => rows.find((r) => r.name === name)?.relationship ?? undefined;
const GUEST_NOT_BOOTING = /^guest-not-booting: /;

test('a guest whose kernel hangs is Warning with a reason; the test guest that boots is not', async () => {
  const serial = join(q.state, 'sites', 'site-a', 'vms', 'web-01', 'serial.log');
  await waitFor('web-01 prints on its console', () => {
    try {
      return readFileSync(serial, 'utf8').trim().length > 0;
    } catch {
      return false;
    }
  }, 90_000, run.output);

  // Within 60 s of its start (15 s timeout plus passes), and seen through the CLI as a user would.
  let rows: StatusRow[] = [];
  for (const deadline = Date.now() + 60_000; ; ) {
    rows = await status();
    if (rel(rows, 'stuck-01')?.health === 'Warning') break;
    if (Date.now() > deadline) throw new Error(`stuck-01 not Warning: ${JSON.stringify(rel(rows, 'stuck-01'))}\n${run.output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  const stuck = rel(rows, 'stuck-01')!;
  expect(stuck.healthReasons).toContain('guest-not-booting: VM "stuck-01" runs but shows no boot progress: no serial console output and no guest agent reply within 15 s since QEMU started it (accel tcg)');

  // web-01 started before stuck-01, so it is past its boot timeout too: it booted, and says so by not warning.
  const web = rel(rows, 'web-01')!;
  expect(web.healthReasons ?? []).not.toContainEqual(expect.stringMatching(GUEST_NOT_BOOTING));
  expect(web.health, JSON.stringify(web.healthReasons)).toBe('Normal');

  // The probe's fallback for the hanging kernel is in site-a's agent log, with its reason.
  const logged = readFileSync(join(q.state, 'logs', 'site-a.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const fallback = logged.find((l) => l.msg === 'qemu accel: falling back to TCG' && String(l.kernel).endsWith('hang.mb'));
  expect(fallback?.reason).toMatch(/^KVM not usable: /);

  const text = await q.cli(['status']);
  expect(text.stdout).toContain('stuck-01: Warning - guest-not-booting: VM "stuck-01" runs but shows no boot progress');
  expect(text.stdout).not.toMatch(/web-01: Warning/);
}, 180_000);

// Sample VMs for a demo or a quickstart: a `sample-vms.json` beside the declarations names VMs to
// create on an embedded site when missing, and a modest write workload to run on their disks, so
// replication has something real to copy. Not a resource kind: production VMs already exist.
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { NbdClient } from '../nbd/client.ts';
import { buildTestGuest, makeGuestDisk } from './test-guest.ts';
import { runWorkload } from './workload.ts';
import { TerminalError } from '../model/errors.ts';
import { parseSize } from '../model/units.ts';
import type { CreateVmRequest } from '../transport/agent-api.ts';
import type { Site } from '../sites/site.ts';

export const SAMPLE_VMS_FILE = 'sample-vms.json';

/** A sample VM that runs drsite's test guest (a qemu site): its disk becomes ext4 holding `script` as /drsite/run.sh. */
export interface SampleGuest {
  /** Actions of the guest's init (src/demo/guest/init.sh), e.g. `seed,script,wait`. */
  run: string;
  /** The guest's /drsite/run.sh, read from this file (relative to the sample file). */
  script?: string;
}

export interface SampleVms {
  file: string;
  /** The (embedded) site the VMs are created on. */
  site: string;
  vms: (CreateVmRequest & { guest?: SampleGuest })[];
  /** Bytes per second written to each VM (spread over its disks); 0 = no workload. */
  workloadRate: number;
  pattern: 'random' | 'sequential' | 'mixed';
}

interface SampleFile {
  site: string;
  vms: {
    name: string;
    disks: { name: string; size: string | number }[];
    adapters?: { name: string; network?: string }[];
    cpus?: number;
    memoryMiB?: number;
    guest?: SampleGuest;
    /** A kernel of its own to boot (paths relative to the sample file), instead of the test guest. */
    boot?: { kernel: string; initrd?: string; append?: string };
  }[];
  workload?: { rate?: string | number; pattern?: 'random' | 'sequential' | 'mixed' };
}

const size = (v: string | number, where: string): number => {
  const n = typeof v === 'number' ? v : parseSize(v);
  if (n === undefined || !Number.isSafeInteger(n) || n <= 0) throw new TerminalError('invalid-argument', `${where}: ${JSON.stringify(v)} is not a size such as 64MiB`);
  return n;
};

/** The first `sample-vms.json` found in the given directories (files given directly are ignored). */
export async function findSampleVms(paths: readonly string[]): Promise<SampleVms | undefined> {
  for (const p of paths) {
    const isDir = await stat(p).then((s) => s.isDirectory(), () => false);
    if (!isDir) continue;
    const file = join(p, SAMPLE_VMS_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      continue;
    }
    let doc: SampleFile;
    try {
      doc = JSON.parse(text) as SampleFile;
    } catch (e) {
      throw new TerminalError('invalid-argument', `${file}: not valid JSON: ${(e as Error).message}`);
    }
    if (typeof doc.site !== 'string' || !Array.isArray(doc.vms)) throw new TerminalError('invalid-argument', `${file}: expected {site, vms: [...]}`);
    return {
      file,
      site: doc.site,
      vms: doc.vms.map((vm, i) => ({
        name: vm.name,
        disks: vm.disks.map((d, j) => ({ name: d.name, size: size(d.size, `${file} vms[${i}].disks[${j}].size`) })),
        adapters: vm.adapters ?? [],
        power: 'Running' as const,
        ...(vm.cpus !== undefined && { cpus: vm.cpus }),
        ...(vm.memoryMiB !== undefined && { memoryMiB: vm.memoryMiB }),
        ...(vm.guest && { guest: { run: vm.guest.run, ...(vm.guest.script && { script: resolve(p, vm.guest.script) }) } }),
        ...(vm.boot && { boot: { ...vm.boot, kernel: resolve(p, vm.boot.kernel), ...(vm.boot.initrd !== undefined && { initrd: resolve(p, vm.boot.initrd) }) } }),
      })),
      workloadRate: doc.workload?.rate === undefined ? 0 : size(doc.workload.rate, `${file} workload.rate`),
      pattern: doc.workload?.pattern ?? 'random',
    };
  }
  return undefined;
}

/**
 * Creates the sample VMs that exist on no site yet; returns the names created. Only on an embedded
 * site. A VM a failover moved to another site is there, not missing: creating it again at home
 * would make a second copy of it.
 */
export async function ensureSampleVms(site: Site, sample: SampleVms, others: readonly Site[] = []): Promise<string[]> {
  if (!site.embedded) return [];
  const have = new Set((await site.vms()).map((v) => v.name));
  for (const other of others) {
    if (other === site || !other.embedded) continue;
    for (const v of await other.vms().catch(() => [])) have.add(v.name);
  }
  const created: string[] = [];
  for (const { guest, ...vm } of sample.vms) {
    if (have.has(vm.name)) continue;
    if (guest) await createGuestVm(site, vm, guest);
    else await site.createVm(vm);
    created.push(vm.name);
  }
  return created;
}

/**
 * A VM that boots the test guest: defined off with the guest's kernel, its first disk made an ext4
 * filesystem (with the sample's run.sh) and written through the agent's export, then started.
 */
async function createGuestVm(site: Site, vm: CreateVmRequest, guest: SampleGuest): Promise<void> {
  const g = await buildTestGuest();
  const append = ['console=ttyS0', 'quiet', `drsite.run=${guest.run}`, 'drsite.off=0'].join(' ');
  await site.createVm({ ...vm, power: 'Off', boot: { kernel: g.kernel, initrd: g.initrd, append } });
  const disk = vm.disks[0]!;
  const staging = await mkdtemp(join(tmpdir(), 'drsite-sample-'));
  try {
    const image = join(staging, 'disk.img');
    await writeFile(image, '');
    await truncate(image, disk.size);
    await makeGuestDisk(image, guest.script ? { '/drsite/run.sh': await readFile(guest.script) } : {});
    const c = await NbdClient.connect(join(site.dataDir!, 'nbd', `${vm.name}.sock`), disk.name);
    try {
      const data = await readFile(image);
      for (let at = 0; at < data.length; at += 4 << 20) await c.write(at, data.subarray(at, Math.min(data.length, at + (4 << 20))));
      await c.flush();
    } finally {
      await c.close();
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  await site.setVmPower(vm.name, 'Running');
}

/**
 * Writes to every disk of the sample VMs through their NBD exports until `signal` aborts. A disk
 * whose export goes away (VM powered off by a planned failover) stops its writer; the rest go on.
 */
export function startSampleWorkload(site: Site, sample: SampleVms, signal: AbortSignal): Promise<void> {
  if (!site.dataDir || sample.workloadRate <= 0) return Promise.resolve();
  const runs: Promise<unknown>[] = [];
  let seed = 1;
  for (const vm of sample.vms.filter((v) => !v.guest)) { // a guest writes by itself
    const rate = Math.max(4096, Math.floor(sample.workloadRate / vm.disks.length));
    for (const d of vm.disks) {
      runs.push(
        runWorkload(
          { socketPath: join(site.dataDir, 'nbd', `${vm.name}.sock`), exportName: d.name },
          { pattern: sample.pattern, rate, durationMs: 365 * 86_400_000, seed: seed++, signal },
        ).catch(() => undefined),
      );
    }
  }
  return Promise.all(runs).then(() => undefined);
}

/**
 * The demo beside a reconciling command: finds `sample-vms.json` among the declaration paths,
 * creates its VMs on their embedded site and runs the workload until stopped.
 */
export async function startSampleCompanion(
  paths: readonly string[],
  sites: { sites: ReadonlyMap<string, Site> },
  report?: (line: string) => void,
): Promise<{ stop(): Promise<void> } | undefined> {
  const sample = await findSampleVms(paths);
  const site = sample && sites.sites.get(sample.site);
  if (!sample || !site) return undefined;
  const created = await ensureSampleVms(site, sample, [...sites.sites.values()]);
  if (created.length) report?.(`created sample VM(s) ${created.join(', ')} on ${site.name} (${sample.file})`);
  const workload = new AbortController();
  const running = startSampleWorkload(site, sample, workload.signal);
  return {
    async stop() {
      workload.abort();
      await running;
    },
  };
}

// The cloud-init NoCloud seed of a VM: a small vfat image labelled `cidata` holding `meta-data`
// (instance-id, local-hostname) and `network-config` v2 with the static addresses, gateways and
// DNS servers of each adapter, matched by MAC, so a failed-over guest comes up with its site's TCP/IP.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { TerminalError } from '../../../model/errors.ts';
import type { VmAdapter, VmDefinition } from '../../../model/hypervisor.ts';
import { macFor } from './qemu-args.ts';

const run = promisify(execFile);

export interface SeedOptions {
  /** cloud-init applies network-config again only when this changes. @default derived from the VM and its network-config */
  readonly instanceId?: string;
  /** @default the VM name */
  readonly hostname?: string;
}

/** YAML double-quoted scalars are JSON strings. */
const q = (s: string): string => JSON.stringify(s);

function ethernet(vm: string, a: VmAdapter): string[] {
  const lines = [`  ${q(a.name)}:`, '    match:', `      macaddress: ${q(macFor(vm, a))}`];
  const fams = [a.ipv4, a.ipv6].filter((f) => f !== undefined);
  if (fams.length === 0) return [...lines, '    dhcp4: false', '    dhcp6: false'];
  lines.push('    addresses:', ...fams.map((f) => `      - ${q(f.address)}`));
  const routes = [
    ...(a.ipv4?.gateway ? [['0.0.0.0/0', a.ipv4.gateway]] : []),
    ...(a.ipv6?.gateway ? [['::/0', a.ipv6.gateway]] : []),
  ];
  if (routes.length) lines.push('    routes:', ...routes.flatMap(([to, via]) => [`      - to: ${q(to!)}`, `        via: ${q(via!)}`]));
  const dns = [...(a.ipv4?.dns ?? []), ...(a.ipv6?.dns ?? [])];
  if (dns.length) lines.push('    nameservers:', '      addresses:', ...dns.map((d) => `        - ${q(d)}`));
  return lines;
}

/** network-config v2 for the adapters; the block style src/demo/guest/init.sh reads. */
export function networkConfig(vm: VmDefinition): string {
  const names = new Set<string>();
  for (const a of vm.adapters) {
    if (names.has(a.name)) throw new TerminalError('invalid-argument', `VM "${vm.name}": two adapters are named "${a.name}"`);
    names.add(a.name);
  }
  const eths = vm.adapters.flatMap((a) => ethernet(vm.name, a));
  return ['version: 2', ...(eths.length ? ['ethernets:', ...eths] : ['ethernets: {}']), ''].join('\n');
}

export function metaData(vm: VmDefinition, opts: SeedOptions = {}): string {
  const id = opts.instanceId ?? `${vm.name}-${createHash('sha256').update(networkConfig(vm)).digest('hex').slice(0, 12)}`;
  return `instance-id: ${q(id)}\nlocal-hostname: ${q(opts.hostname ?? vm.name)}\n`;
}

/** Writes the seed image to `path` (replacing it) with mkfs.vfat and mcopy. */
export async function buildSeedImage(path: string, vm: VmDefinition, opts: SeedOptions = {}): Promise<void> {
  const staging = await mkdtemp(join(dirname(path), '.seed-'));
  try {
    await writeFile(join(staging, 'meta-data'), metaData(vm, opts));
    await writeFile(join(staging, 'network-config'), networkConfig(vm));
    await writeFile(join(staging, 'user-data'), '#cloud-config\n{}\n');
    await rm(path, { force: true });
    await tool(vm.name, 'mkfs.vfat', ['-n', 'cidata', '-C', path, '1024'], 'dosfstools');
    for (const f of ['meta-data', 'network-config', 'user-data']) await tool(vm.name, 'mcopy', ['-o', '-i', path, join(staging, f), `::${f}`], 'mtools');
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function tool(vm: string, cmd: string, args: string[], pkg: string): Promise<void> {
  try {
    await run(cmd, args);
  } catch (e) {
    const x = e as NodeJS.ErrnoException & { stderr?: string };
    if (x.code === 'ENOENT') throw new TerminalError('not-found', `VM "${vm}": building the seed disk needs ${cmd} (Debian package ${pkg})`);
    throw new TerminalError('invalid-state', `VM "${vm}": ${cmd} failed building the seed disk: ${(x.stderr ?? x.message).trim()}`);
  }
}

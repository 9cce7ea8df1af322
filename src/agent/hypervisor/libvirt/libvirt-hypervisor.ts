// The `libvirt` hypervisor. Two kinds of VM live on a libvirt site:
// - domains drsite did not create (the protected VMs): found by name on the connection, tracked
//   through libvirt checkpoints (checkpoint-source.ts), powered through virsh; never listed among
//   drsite's own VMs, never undefined by drsite;
// - domains drsite defines (a failover's or test failover's VM): a folder `<root>/<vm>/` with
//   vm.json as for `files`, and a libvirt domain defined from the replicated domain XML rewritten
//   for this site (disks on the agent's NBD exports of the recovery point, mapped networks, the
//   NoCloud seed disk, MACs kept). Removing one undefines the domain and removes its files.
// libvirt's QEMU runs as its own user, so everything it opens that drsite makes (NBD sockets,
// scratch files, seed disks, consoles) lives under runDir, group-owned by the QEMU group
// (qemu-files.ts).
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TerminalError } from '../../../model/errors.ts';
import type { GuestLiveness, Hypervisor, PowerOptions, PowerState, VmDefinition, VmDisk, VmRuntimeStatus } from '../../../model/hypervisor.ts';
import { formatSeconds } from '../../../model/units.ts';
import { silentLogger, type Logger } from '../../../transport/logger.ts';
import { FilesHypervisor } from '../files.ts';
import { readDomain, rewriteForTarget } from './domain-xml.ts';
import { QemuFiles } from './qemu-files.ts';
import { DEFAULT_URI, Virsh, isNotFound } from './virsh.ts';

export interface LibvirtSettings {
  /** @default "qemu:///system" */
  readonly uri?: string;
  /** @default /var/lib/libvirt/drsite/<hash of the agent's data folder> */
  readonly runDir?: string;
  /** Prefix of the domains this site defines (`<prefix><vm>`), for sites sharing one libvirtd. @default "" */
  readonly domainPrefix?: string;
  /** @default libvirt-qemu, else qemu, else kvm */
  readonly qemuGroup?: string;
  /** @default 60000 */
  readonly shutdownTimeoutMs?: number;
  /** How long a domain this site starts has to print on its file serial console (0: not watched). @default 45000 */
  readonly bootTimeoutMs?: number;
}

export interface LibvirtHypervisorOptions {
  readonly log?: Logger;
}

const DEFAULT_SHUTDOWN_MS = 60_000;
const DEFAULT_BOOT_MS = 45_000;
const SHUTDOWN_REPEAT_MS = 3000;

export class LibvirtHypervisor implements Hypervisor {
  readonly kind = 'libvirt';
  readonly root: string;
  readonly virsh: Virsh;
  readonly settings: LibvirtSettings;
  /** Where the agent's NBD sockets go (QEMU must reach them). */
  readonly socketDir: string;
  readonly runDir: string;
  /** The run directory's files, shared with libvirt's QEMU. */
  readonly qemuFiles: QemuFiles;
  readonly #defs: FilesHypervisor;
  readonly #log: Logger;
  /** When this agent started (or found running) each domain it defined, for liveness. */
  readonly #started = new Map<string, { since: number; attached: boolean }>();
  /** VMs whose definition (as last defined here) has a file serial console at consolePath. */
  readonly #consoles = new Set<string>();

  constructor(root: string, settings: LibvirtSettings = {}, opts: LibvirtHypervisorOptions = {}) {
    this.root = resolve(root);
    this.settings = settings;
    this.virsh = new Virsh(settings.uri ?? DEFAULT_URI);
    this.runDir = resolve(settings.runDir ?? join('/var/lib/libvirt/drsite', createHash('sha256').update(this.root).digest('hex').slice(0, 12)));
    this.socketDir = join(this.runDir, 'nbd');
    this.qemuFiles = new QemuFiles(this.runDir, settings.qemuGroup);
    this.#defs = new FilesHypervisor(this.root);
    this.#log = opts.log ?? silentLogger;
  }

  vmDir(name: string): string {
    return this.#defs.vmDir(name);
  }
  diskPath(vm: string, disk: VmDisk): string {
    return this.#defs.diskPath(vm, disk);
  }
  list(): Promise<VmDefinition[]> {
    return this.#defs.list();
  }
  get(name: string): Promise<VmDefinition> {
    return this.#defs.get(name);
  }
  create(def: Parameters<Hypervisor['create']>[0]): Promise<VmDefinition> {
    return this.#defs.create(def);
  }
  save(vm: VmDefinition): Promise<void> {
    return this.#defs.save(vm);
  }

  /**
   * drsite's VM of this name; a libvirt domain of the name that drsite did not define is refused
   * here, so nothing (a failover, a new VM) lands on top of it.
   */
  async find(name: string): Promise<VmDefinition | undefined> {
    const own = await this.#defs.find(name);
    if (own) return own;
    const domain = this.domainName(name);
    if (await this.domainExists(domain)) {
      throw new TerminalError('invalid-state', `libvirt domain "${domain}" already exists at ${this.virsh.uri} on this site (drsite did not define it), so VM ${name} cannot be defined here; rename or undefine that domain first`);
    }
    return undefined;
  }

  /** The libvirt domain of a VM drsite defines on this site. */
  domainName(vm: string): string {
    this.vmDir(vm);
    return `${this.settings.domainPrefix ?? ''}${vm}`;
  }

  /**
   * The connection's domains drsite did not define, as VMs a ProtectedVM may name: disks by target
   * (`vda`) with their capacity, interfaces as `eth<n>` on their libvirt network, power.
   */
  async externalVms(): Promise<VmDefinition[]> {
    const own = new Set((await this.list()).map((vm) => this.domainName(vm.name)));
    const out: VmDefinition[] = [];
    const lines = (await this.virsh.run(['list', '--all'])).split('\n').map((l) => l.trim()).filter(Boolean);
    for (const line of lines) {
      const m = /^(\S+)\s+(\S+)\s+(.+)$/.exec(line);
      if (!m || own.has(m[2]!)) continue;
      const name = m[2]!;
      try {
        const info = readDomain(await this.virsh.run(['dumpxml', '--inactive', name], { domain: name }), `libvirt domain "${name}"`);
        const disks: VmDisk[] = [];
        for (const d of info.disks) {
          const size = await this.virsh.run(['domblkinfo', name, d.target], { domain: name }).then((o) => Number(/^Capacity:\s+(\d+)/m.exec(o)?.[1] ?? 0), () => 0);
          disks.push({ name: d.target, file: d.path ?? d.protocol ?? '', size });
        }
        const adapters = info.interfaces.map((i) => ({ name: i.name, ...(i.network && { network: i.network }), ...(i.mac && { mac: i.mac }) }));
        out.push({ name, disks, adapters, power: m[3]!.trim() === 'shut off' ? 'Off' : 'Running' });
      } catch (e) {
        if (!isNotFound(e)) throw e; // undefined while being listed
      }
    }
    return out;
  }

  async domainExists(name: string): Promise<boolean> {
    try {
      await this.virsh.run(['domuuid', name], { domain: name });
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  /** Folder of a VM's runtime files QEMU opens (seed disk, console log). */
  runVmDir(name: string): string {
    this.vmDir(name);
    return join(this.runDir, 'vms', name);
  }

  consolePath(name: string): string {
    return join(this.runVmDir(name), 'serial.log');
  }

  /**
   * Running: defines the domain (from the replicated definition, rewritten for this site) on the
   * agent's exports and starts it. Off: `virsh shutdown` and a wait; past the timeout a clear error
   * unless `force`, which `virsh destroy`s it. The domain stays defined while the VM exists.
   */
  async setPower(name: string, power: PowerState, opts: PowerOptions): Promise<VmDefinition> {
    const vm = await this.get(name);
    const domain = this.domainName(name);
    const state = await this.#state(domain);
    if (power === 'Running') {
      if (state !== 'running' && state !== 'paused') {
        await this.#define(vm, opts);
        await this.#start(name, domain);
        this.#log.info('libvirt domain started', { vm: name, domain, uri: this.virsh.uri });
      } else if (state === 'paused') {
        await this.virsh.run(['resume', domain], { domain });
      }
    } else if (state !== undefined && state !== 'shut off') {
      await shutdownDomain(this.virsh, domain, opts.timeoutMs ?? this.settings.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_MS, opts.force ?? false);
    }
    const next = { ...vm, power };
    await this.save(next);
    return next;
  }

  async status(name: string): Promise<VmRuntimeStatus> {
    await this.get(name);
    const domain = this.domainName(name);
    const state = await this.#state(domain);
    if (state === undefined) return { power: 'Off', detail: 'not defined' };
    if (state === 'running' || state === 'paused' || state === 'in shutdown') return { power: 'Running', detail: state };
    if (state === 'crashed') return { power: 'Off', detail: 'crashed', crashed: { at: Date.now(), message: `libvirt reports domain "${domain}" crashed` } };
    return { power: 'Off', detail: state === 'shut off' ? 'stopped' : state };
  }

  /**
   * What a commit asks of a running guest before its disks move from the recovery point's
   * overlays to images. libvirt (9.0) gives NBD disks no reconnect delay, so QEMU could not follow
   * a paused guest's disks to the new exports: instead the guest shuts down cleanly (`virsh
   * shutdown`, the site's shutdownTimeout) and `resume` starts it again on the committed disks.
   */
  async pause(name: string): Promise<void> {
    const domain = this.domainName(name);
    await shutdownDomain(this.virsh, domain, this.settings.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_MS, false);
  }

  /** After pause: starts the domain again (its definition names the same export socket, served anew). */
  async resume(name: string): Promise<void> {
    const domain = this.domainName(name);
    const state = await this.#state(domain);
    if (state === 'paused') return void (await this.virsh.run(['resume', domain], { domain }));
    if (state !== 'shut off') return;
    await this.qemuFiles.share(join(this.socketDir, `${name}.sock`));
    await this.#start(name, domain);
  }

  /**
   * The agent stops: the domains this site defined run on its NBD exports, which go away with it,
   * and libvirt gives NBD disks no reconnect delay. They shut down cleanly now (destroyed past the
   * shutdown timeout) rather than meet I/O errors; their VMs stay Running, so `adopt` starts them
   * again on the next agent's exports.
   */
  async close(): Promise<void> {
    for (const vm of await this.list().catch(() => [] as VmDefinition[])) {
      const domain = this.domainName(vm.name);
      const state = await this.#state(domain).catch(() => undefined);
      if (state === undefined || state === 'shut off') continue;
      await shutdownDomain(this.virsh, domain, this.settings.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_MS, true).catch((e: unknown) =>
        this.#log.warn('libvirt domain not shut down at agent stop', { vm: vm.name, domain, error: (e as Error).message }),
      );
    }
  }

  /** At agent start, once the exports are served: the VMs recorded Running whose domain is off start again. */
  async adopt(): Promise<void> {
    for (const vm of await this.list()) {
      if (vm.power !== 'Running') continue;
      const domain = this.domainName(vm.name);
      const state = await this.#state(domain);
      const defined = await readFile(join(this.runVmDir(vm.name), 'domain.xml'), 'utf8').catch(() => '');
      if (defined.includes(this.consolePath(vm.name))) this.#consoles.add(vm.name);
      if (state === 'running' || state === 'paused') this.#started.set(vm.name, { since: Date.now(), attached: true });
      if (state !== 'shut off') continue;
      try {
        await this.qemuFiles.share(join(this.socketDir, `${vm.name}.sock`));
        await this.#start(vm.name, domain);
        this.#log.info('libvirt domain started again on the agent\'s exports', { vm: vm.name, domain });
      } catch (e) {
        this.#log.warn('libvirt domain not started again', { vm: vm.name, domain, error: (e as Error).message });
      }
    }
  }

  /** Stops the domain drsite defined (hard), undefines it and removes its files. */
  async remove(name: string): Promise<void> {
    const own = await this.#defs.find(name);
    if (!own) return; // a domain drsite did not define is never undefined by it
    await this.#undefine(this.domainName(name));
    this.#started.delete(name);
    await rm(this.runVmDir(name), { recursive: true, force: true });
    await this.#defs.remove(name);
  }

  /**
   * Boot signs of a running domain this site defined: `alive` once it printed on its file serial
   * console (the rewritten definition puts it at consolePath), `not-booting` when it did not within
   * the site's bootTimeout of its start. Undefined for a domain without a file console, one this
   * agent did not start or find running, and with bootTimeout 0.
   */
  liveness(name: string): GuestLiveness | undefined {
    const started = this.#started.get(name);
    const timeout = this.settings.bootTimeoutMs ?? DEFAULT_BOOT_MS;
    if (!started || timeout === 0 || !this.#consoles.has(name)) return undefined;
    let console: { size: number; mtimeMs: number } | undefined;
    try {
      console = statSync(this.consolePath(name));
    } catch {
      console = undefined;
    }
    return consoleLiveness(started, console, timeout, Date.now());
  }

  async #start(name: string, domain: string): Promise<void> {
    const since = Date.now();
    await this.virsh.run(['start', domain], { domain });
    this.#started.set(name, { since, attached: false });
  }

  async #state(name: string): Promise<string | undefined> {
    try {
      return (await this.virsh.run(['domstate', name], { domain: name })).trim();
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async #define(vm: VmDefinition, opts: PowerOptions): Promise<void> {
    if (!vm.domainXml) throw new TerminalError('invalid-state', `VM "${vm.name}" has no replicated libvirt domain definition to define it from (its primary was not a libvirt site)`);
    const dir = this.runVmDir(vm.name);
    await this.qemuFiles.prepareDir(dir);
    await this.qemuFiles.prepareDir(dirname(resolve(opts.nbdSocket)));
    await this.qemuFiles.share(opts.nbdSocket);
    let seedImage: string | undefined;
    if (opts.seedImage) {
      seedImage = join(dir, 'seed.img');
      await copyFile(opts.seedImage, seedImage);
      await this.qemuFiles.share(seedImage);
    }
    const networks = Object.fromEntries(vm.adapters.map((a) => [a.name, a.network]));
    const domain = this.domainName(vm.name);
    const uuid = (await this.#state(domain)) === undefined ? undefined : (await this.virsh.run(['domuuid', domain], { domain })).trim();
    const xml = rewriteForTarget(vm.domainXml, {
      name: domain,
      ...(uuid && { uuid }),
      disks: vm.disks.map((d) => ({ target: d.name, socket: resolve(opts.nbdSocket), exportName: d.name })),
      networks,
      ...(seedImage && { seedImage }),
      serialLog: this.consolePath(vm.name),
    });
    const file = join(dir, 'domain.xml');
    if (xml.includes(this.consolePath(vm.name))) this.#consoles.add(vm.name);
    else this.#consoles.delete(vm.name);
    await writeFile(file, xml);
    // Defined again at every start, so the definition always says what vm.json says.
    await this.virsh.run(['define', file], { domain: this.domainName(vm.name) });
  }

  async #undefine(name: string): Promise<void> {
    const state = await this.#state(name);
    if (state === undefined) return;
    if (state !== 'shut off') await this.virsh.run(['destroy', name], { domain: name }).catch(() => {});
    await this.virsh.run(['undefine', name, '--checkpoints-metadata', '--nvram'], { domain: name }).catch(async () => {
      await this.virsh.run(['undefine', name], { domain: name });
    });
  }
}

/**
 * A domain's boot signs from its file console: alive when it holds output written since the start
 * (a console left from an earlier run does not count), else booting until `timeoutMs`, then
 * not-booting.
 */
export function consoleLiveness(started: { since: number; attached: boolean }, console: { size: number; mtimeMs: number } | undefined, timeoutMs: number, now: number): GuestLiveness {
  const { since, attached } = started;
  // An attached domain ran before this agent: any output counts. mtime has coarse granularity on
  // some file systems, hence the second of slack.
  if (console && console.size > 0 && (attached || console.mtimeMs >= since - 1000)) return { state: 'alive', since, evidence: 'serial console output' };
  const from = attached ? 'the agent found it running' : 'libvirt started it';
  const elapsed = now - since;
  if (elapsed >= timeoutMs) return { state: 'not-booting', since, evidence: `no serial console output within ${formatSeconds(timeoutMs)} since ${from}` };
  return { state: 'booting', since, evidence: `no serial console output yet, ${formatSeconds(elapsed)} since ${from}` };
}

/** `virsh shutdown` (ACPI) and a wait; then `virsh destroy` with `force`, or a clear error. */
export async function shutdownDomain(virsh: Virsh, name: string, timeoutMs: number, force: boolean): Promise<void> {
  const state = async () => (await virsh.run(['domstate', name], { domain: name })).trim();
  if ((await state()) === 'shut off') return;
  if (force && timeoutMs === 0) {
    await virsh.run(['destroy', name], { domain: name });
    return;
  }
  if ((await state()) === 'paused') await virsh.run(['resume', name], { domain: name }).catch(() => {});
  await virsh.run(['shutdown', name], { domain: name });
  const until = Date.now() + timeoutMs;
  // A guest still booting misses an ACPI power button pressed before its handler runs: pressed
  // again every few seconds until it stops (a guest handles the first it sees).
  let pressed = Date.now();
  while (Date.now() < until) {
    if ((await state()) === 'shut off') return;
    if (Date.now() - pressed >= SHUTDOWN_REPEAT_MS) {
      pressed = Date.now();
      await virsh.run(['shutdown', name], { domain: name }).catch(() => {});
    }
    await sleep(250);
  }
  if (!force) {
    throw new TerminalError('invalid-state', `libvirt domain "${name}" did not shut down within ${timeoutMs} ms of virsh shutdown; it is still running. Retry with a longer timeout, or force to destroy it`);
  }
  await virsh.run(['destroy', name], { domain: name });
}

// The `qemu` hypervisor: a VM is a folder `<root>/<vm>/` (vm.json and disk images, as for `files`)
// plus, while it runs, a daemonized qemu-system-x86_64 with its QMP socket, guest-agent socket,
// pidfile and serial console log in the same folder. Disks are the agent's NBD exports; power goes
// through QMP. A guest that stops without being asked is recorded as crashed; nothing here throws
// into the agent for it, and an agent restart re-attaches through the pidfile and QMP socket.
import { spawn } from 'node:child_process';
import { open, readFile, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyedMutex } from '../../../core/async-mutex.ts';
import { readJsonIfExists, writeJsonAtomic } from '../../../core/atomic-file.ts';
import { TerminalError } from '../../../model/errors.ts';
import { formatSeconds } from '../../../model/units.ts';
import type { GuestLiveness, Hypervisor, PowerOptions, PowerState, VmDefinition, VmDisk, VmRuntimeStatus } from '../../../model/hypervisor.ts';
import { silentLogger, type Logger } from '../../../transport/logger.ts';
import { FilesHypervisor } from '../files.ts';
import { chooseAccel, type ProbeGuest } from './accel.ts';
import { GuestAgentClient } from './guest-agent.ts';
import { QEMU_DEFAULTS, qemuArgs, type Accel, type GuestPaths, type QemuSettings } from './qemu-args.ts';
import { QmpClient, QmpError } from './qmp.ts';

export interface QemuHypervisorOptions {
  readonly log?: Logger;
  /** Called when a guest stops by itself: it powered off (`crashed` absent) or QEMU died. */
  readonly onStopped?: (vm: string, status: VmRuntimeStatus) => void;
}

/** A guest this driver is attached to through QMP. */
interface Guest {
  readonly vm: string;
  readonly pid: number;
  readonly qmp: QmpClient;
  /** Powering off was asked of the driver (setPower Off, remove). */
  requested: boolean;
  /** The driver told QEMU to quit (or killed it): its end is not a crash. */
  quitting: boolean;
  /** The driver let go of it (close()); QEMU runs on for the next driver to adopt. */
  detached: boolean;
  /** Data of the SHUTDOWN event, once QEMU sent it. */
  shutdown: { guest?: boolean; reason?: string } | undefined;
  /** Resolves once QEMU's QMP socket closed and the process is gone. */
  readonly gone: Promise<void>;
  /** Boot signs: watched from start (or attach) until one is seen or QEMU is gone. */
  readonly boot: BootWatch;
}

interface BootWatch {
  /** When this driver started the guest, or attached to it (then `attached`). */
  readonly since: number;
  readonly attached: boolean;
  /** The accelerator this driver started it with (unknown for an adopted guest). */
  readonly accel?: Accel;
  /** The first sign seen. */
  seen?: string;
  /** A guest agent ping is under way. */
  pinging: boolean;
  timer?: NodeJS.Timeout;
}

/** How often a booting guest's serial log is looked at. */
const BOOT_POLL_MS = 1000;
/** A guest agent ping (only while the console is silent): every few polls, each with this timeout. */
const BOOT_PING_EVERY = 5;
const BOOT_PING_TIMEOUT_MS = 1000;

interface CrashRecord {
  at: number;
  message: string;
}

const UNIX_PATH_MAX = 107;

/** QEMU run states in which the guest no longer runs though QEMU does. */
const DEAD_STATES = new Set(['internal-error', 'guest-panicked', 'io-error']);

export class QemuHypervisor implements Hypervisor {
  readonly kind = 'qemu';
  readonly root: string;
  readonly settings: QemuSettings;
  readonly #defs: FilesHypervisor;
  readonly #log: Logger;
  readonly #onStopped: QemuHypervisorOptions['onStopped'];
  readonly #guests = new Map<string, Guest>();
  /** One start, stop or adoption at a time per VM. */
  readonly #locks = new KeyedMutex();
  /** The `auto` probe's result per machine type and kernel (what the probe booted). */
  readonly #accels = new Map<string, Promise<{ accel: Accel; reason: string }>>();

  constructor(root: string, settings: QemuSettings = {}, opts: QemuHypervisorOptions = {}) {
    // Absolute: a daemonized QEMU changes its directory to /, so no path it gets may be relative.
    this.root = resolve(root);
    this.settings = settings;
    this.#defs = new FilesHypervisor(this.root);
    this.#log = opts.log ?? silentLogger;
    this.#onStopped = opts.onStopped;
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
  find(name: string): Promise<VmDefinition | undefined> {
    return this.#defs.find(name);
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

  /** Where QEMU writes the guest's serial console (truncated at each start). */
  consolePath(name: string): string {
    return this.#paths(name).serial;
  }

  /** The qemu-guest-agent channel (`org.qemu.guest_agent.0`) of a running guest. */
  guestAgentSocket(name: string): string {
    return this.#paths(name).qga;
  }

  /**
   * The accelerator a guest booting `kernel` (absent: from its firmware) starts with, and why. With
   * `auto`, the probe boots that kernel under the site's machine type, once per kernel; a fallback
   * to TCG is logged with its reason.
   */
  accel(kernel?: string): Promise<{ accel: Accel; reason: string }> {
    const guest: ProbeGuest = {
      machine: this.settings.machine ?? QEMU_DEFAULTS.machine,
      memoryMiB: this.settings.memoryMiB ?? QEMU_DEFAULTS.memoryMiB,
      ...(kernel !== undefined && { kernel: resolve(kernel) }),
    };
    const key = `${guest.machine}\0${guest.kernel ?? ''}`;
    let chosen = this.#accels.get(key);
    if (!chosen) {
      const wanted = this.settings.accel ?? QEMU_DEFAULTS.accel;
      chosen = chooseAccel(this.settings.emulator ?? QEMU_DEFAULTS.emulator, wanted, guest);
      if (wanted === 'auto') {
        chosen.then((c) => {
          if (c.accel === 'kvm') this.#log.info('qemu accel: KVM', { machine: guest.machine, kernel: guest.kernel, reason: c.reason });
          else this.#log.warn('qemu accel: falling back to TCG', { machine: guest.machine, kernel: guest.kernel, reason: c.reason });
        }, () => {});
      }
      this.#accels.set(key, chosen);
      // A probe that could not run at all (no temp dir, say) is tried again at the next start.
      chosen.catch(() => this.#accels.delete(key));
    }
    return chosen;
  }

  /**
   * Boot signs of a running guest: `alive` once its serial console printed or its guest agent
   * answered, `not-booting` when neither happened within the site's boot timeout of its start.
   */
  liveness(name: string): GuestLiveness | undefined {
    const g = this.#guests.get(name);
    if (!g || g.qmp.isClosed || g.quitting || this.#bootTimeoutMs() === 0) return undefined;
    const w = g.boot;
    if (w.seen) return { state: 'alive', since: w.since, evidence: w.seen };
    const elapsed = Date.now() - w.since;
    const timeout = this.#bootTimeoutMs();
    const from = w.attached ? 'the agent attached to it' : `QEMU started it${w.accel ? ` (accel ${w.accel})` : ''}`;
    // Fixed wording once late (no running count): status records an event when a reason's text changes.
    if (elapsed >= timeout) {
      return { state: 'not-booting', since: w.since, evidence: `no serial console output and no guest agent reply within ${formatSeconds(timeout)} since ${from}` };
    }
    return { state: 'booting', since: w.since, evidence: `no serial console output or guest agent reply yet, ${formatSeconds(elapsed)} since ${from}` };
  }

  async remove(name: string): Promise<void> {
    await this.#serial(name, async () => {
      const g = await this.#attached(name);
      if (g) await this.#hardStop(g);
    });
    await this.#defs.remove(name);
  }

  /**
   * Running: starts QEMU on the agent's exports (paused, then resumed once QMP listens). Off: ACPI
   * power-down and a wait of `timeoutMs`; past it, a clear error unless `force`, which stops the
   * guest hard. `force` with `timeoutMs: 0` is a hard stop without asking the guest.
   */
  async setPower(name: string, power: PowerState, opts: PowerOptions): Promise<VmDefinition> {
    return this.#serial(name, async () => {
      const vm = await this.get(name);
      const g = await this.#attached(name);
      if (power === 'Running') {
        if (!g) await this.#start(vm, opts);
      } else if (g) {
        await this.#shutdown(g, opts);
      }
      await rm(this.#crashFile(name), { force: true });
      const next = { ...(await this.get(name)), power };
      await this.save(next);
      return next;
    });
  }

  async pause(name: string): Promise<void> {
    await this.#serial(name, async () => {
      const g = await this.#attached(name);
      if (!g) throw new TerminalError('invalid-state', `VM "${name}" is not running: nothing to pause`);
      await g.qmp.execute('stop');
    });
  }

  async resume(name: string): Promise<void> {
    await this.#serial(name, async () => {
      const g = await this.#attached(name);
      if (!g) throw new TerminalError('invalid-state', `VM "${name}" is not running: nothing to resume`);
      await g.qmp.execute('cont');
    });
  }

  async status(name: string): Promise<VmRuntimeStatus> {
    await this.get(name);
    // A guest being shut down answers status while setPower waits on it; only attaching is serialized.
    const known = this.#guests.get(name);
    let g: Guest | undefined;
    try {
      g = known && !known.qmp.isClosed ? known : await this.#serial(name, () => this.#attached(name));
    } catch (e) {
      // Its pidfile names a live QEMU that does not answer on QMP: running, but not ours to drive.
      this.#log.warn('qemu status: cannot attach', { vm: name, error: (e as Error).message });
      return { power: 'Running', detail: `not attached: ${(e as Error).message}` };
    }
    if (g) {
      try {
        const s = await g.qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: 5000 });
        if (DEAD_STATES.has(s.status)) {
          return { power: 'Running', detail: s.status, crashed: { at: Date.now(), message: `the guest of VM "${name}" stopped in QEMU state ${s.status} (e.g. a KVM emulation failure or a guest panic); QEMU (pid ${g.pid}) still runs` } };
        }
        if (s.status !== 'shutdown') return { power: 'Running', detail: s.status };
        // Powered off and being let go: answer once that is recorded, so status and vm.json agree.
        await Promise.race([g.gone, sleep(10_000, undefined, { ref: false })]);
      } catch (e) {
        if (!QmpError.is(e) || e.kind !== 'closed') return { power: 'Running', detail: `unknown (${(e as Error).message})` };
        await g.gone;
      }
    }
    const crashed = await readJsonIfExists<CrashRecord>(this.#crashFile(name));
    return crashed ? { power: 'Off', detail: 'crashed', crashed } : { power: 'Off', detail: 'stopped' };
  }

  /** Re-attaches to every guest whose pidfile names a live QEMU; records the others as crashed. */
  async adopt(): Promise<void> {
    for (const vm of await this.list()) {
      await this.#serial(vm.name, () => this.#attached(vm.name)).catch((e: unknown) =>
        this.#log.warn('qemu adopt failed', { vm: vm.name, error: (e as Error).message }),
      );
    }
  }

  /** Drops the QMP connections; the guests keep running for the next driver to adopt. */
  async close(): Promise<void> {
    for (const g of this.#guests.values()) {
      clearInterval(g.boot.timer);
      g.detached = true;
      g.qmp.close();
    }
    this.#guests.clear();
  }

  #paths(name: string): GuestPaths {
    const dir = this.vmDir(name);
    return { qmp: join(dir, 'qmp.sock'), qga: join(dir, 'qga.sock'), pidfile: join(dir, 'qemu.pid'), serial: join(dir, 'serial.log') };
  }

  #crashFile(name: string): string {
    return join(this.vmDir(name), 'crashed.json');
  }

  #serial<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.#locks.run(name, fn);
  }

  /** The attached guest, attaching to a QEMU left by an earlier agent if its pidfile names a live one. */
  async #attached(name: string): Promise<Guest | undefined> {
    const known = this.#guests.get(name);
    // One that is quitting (the guest powered off) counts as gone once it is.
    if (known && !known.qmp.isClosed && !known.quitting) return known;
    if (known) await known.gone;
    const paths = this.#paths(name);
    const pid = await readPid(paths.pidfile);
    if (pid === undefined) return undefined;
    if (!(await isQemuOf(pid, paths.qmp))) {
      await this.#recordCrash(name, `QEMU (pid ${pid}) of VM "${name}" exited while no agent was watching it, without a clean power-off`);
      return undefined;
    }
    const g = await this.#attach(name, pid, paths);
    const s = await g.qmp.execute<{ status: string }>('query-status').catch(() => undefined);
    // It went away while being attached: the close handler has recorded how.
    if (!s) {
      await g.gone;
      return undefined;
    }
    // It powered off while nobody watched (-no-shutdown kept QEMU up): finish the power-off now.
    if (s.status === 'shutdown') {
      await this.#quit(g);
      await this.#markOff(name);
      return undefined;
    }
    return g;
  }

  #bootTimeoutMs(): number {
    return this.settings.bootTimeoutMs ?? QEMU_DEFAULTS.bootTimeoutMs;
  }

  /** Looks for boot signs until one shows: the serial log first (cheap), a guest agent ping now and then. */
  #watchBoot(g: Guest, paths: GuestPaths): void {
    const w = g.boot;
    let polls = 0;
    const look = async () => {
      if (w.seen || g.qmp.isClosed) return clearInterval(w.timer);
      polls++;
      const head = await readHead(paths.serial, 4096);
      if (/\S/.test(head)) return this.#sawBoot(g, 'serial console output');
      if (polls % BOOT_PING_EVERY !== 0 || w.pinging) return;
      w.pinging = true;
      try {
        const c = await GuestAgentClient.connect(paths.qga, g.vm, BOOT_PING_TIMEOUT_MS);
        c.close();
        this.#sawBoot(g, 'guest agent answered');
      } catch {
        // No agent (yet, or at all): the serial log may still show the boot.
      } finally {
        w.pinging = false;
      }
    };
    w.timer = setInterval(() => void look().catch(() => {}), BOOT_POLL_MS);
    w.timer.unref();
    void look().catch(() => {});
  }

  #sawBoot(g: Guest, what: string): void {
    if (g.boot.seen) return;
    g.boot.seen = what;
    clearInterval(g.boot.timer);
    const late = Date.now() - g.boot.since >= this.#bootTimeoutMs();
    if (late) this.#log.info('qemu guest booted after its boot timeout', { vm: g.vm, sign: what });
  }

  async #attach(name: string, pid: number, paths: GuestPaths, started?: { accel: Accel }): Promise<Guest> {
    const qmp = await QmpClient.connect(paths.qmp).catch((e: unknown) => {
      throw new TerminalError('invalid-state', `VM "${name}": cannot attach to its QEMU (pid ${pid}): ${(e as Error).message}`, { cause: e });
    });
    let resolveGone!: () => void;
    const boot: BootWatch = { since: Date.now(), attached: !started, ...(started && { accel: started.accel }), pinging: false };
    const g: Guest = { vm: name, pid, qmp, requested: false, quitting: false, detached: false, shutdown: undefined, gone: new Promise((r) => (resolveGone = r)), boot };
    qmp.onEvent((e) => {
      if (e.event !== 'SHUTDOWN') return;
      g.shutdown = e.data as Guest['shutdown'];
      // The guest powered itself off; QEMU waits in `shutdown` for the driver to let it go.
      if (g.shutdown?.guest === true && !g.quitting) void this.#quit(g).catch(() => {});
    });
    this.#guests.set(name, g);
    if (this.#bootTimeoutMs() > 0) this.#watchBoot(g, paths);
    void qmp.closed.then(async () => {
      clearInterval(g.boot.timer);
      if (g.detached) return resolveGone();
      await waitGone(pid, 5000);
      try {
        await this.#closed(g);
      } catch (e) {
        this.#log.error('qemu: recording a stopped guest failed', { vm: name, error: (e as Error).message });
      } finally {
        if (this.#guests.get(name) === g) this.#guests.delete(name);
        resolveGone();
      }
    });
    return g;
  }

  /** QEMU is gone: a power-off if the driver or the guest asked for it, otherwise a crash. */
  async #closed(g: Guest): Promise<void> {
    if (!g.requested && !g.quitting && g.shutdown?.guest !== true) {
      const how = g.shutdown?.reason ? `stopped (${g.shutdown.reason}) without being asked by the agent` : 'exited without a shutdown: killed or crashed';
      const status = await this.#recordCrash(g.vm, `QEMU (pid ${g.pid}) of VM "${g.vm}" ${how}`);
      this.#onStopped?.(g.vm, status);
      return;
    }
    await rm(this.#paths(g.vm).pidfile, { force: true });
    if (!g.requested) {
      await this.#markOff(g.vm);
      this.#onStopped?.(g.vm, { power: 'Off', detail: 'guest powered off' });
    }
  }

  async #markOff(name: string): Promise<void> {
    await rm(this.#paths(name).pidfile, { force: true });
    const vm = await this.find(name);
    if (vm && vm.power !== 'Off') await this.save({ ...vm, power: 'Off' });
  }

  async #recordCrash(name: string, message: string): Promise<VmRuntimeStatus> {
    const crashed = { at: Date.now(), message };
    this.#log.warn('qemu guest crashed', { vm: name, message });
    await writeJsonAtomic(this.#crashFile(name), crashed);
    await rm(this.#paths(name).pidfile, { force: true });
    return { power: 'Off', detail: 'crashed', crashed };
  }

  async #start(vm: VmDefinition, opts: PowerOptions): Promise<void> {
    const emulator = this.settings.emulator ?? QEMU_DEFAULTS.emulator;
    const paths = this.#paths(vm.name);
    for (const p of [paths.qmp, paths.qga]) {
      if (Buffer.byteLength(p) > UNIX_PATH_MAX) throw new TerminalError('invalid-argument', `VM "${vm.name}": socket path ${p} is longer than ${UNIX_PATH_MAX} bytes; use a shorter agent data directory`);
    }
    const boot = vm.boot;
    if (boot && 'kernel' in boot) {
      for (const [what, p] of [['kernel', boot.kernel], ['initrd', boot.initrd]] as const) {
        if (p !== undefined && !(await isFile(p))) throw new TerminalError('invalid-argument', `VM "${vm.name}": boot ${what} ${p} is not a readable file`);
      }
    } else if (boot?.firmware === 'uefi') {
      const fw = this.settings.uefiFirmware ?? QEMU_DEFAULTS.uefiFirmware;
      if (!(await isFile(fw))) throw new TerminalError('invalid-argument', `VM "${vm.name}": UEFI firmware ${fw} not found (install ovmf or set the site's qemu.uefiFirmware)`);
    }
    if (opts.seedImage !== undefined && !(await isFile(opts.seedImage))) throw new TerminalError('invalid-argument', `VM "${vm.name}": seed image ${opts.seedImage} is not a readable file`);
    const { accel } = await this.accel(boot && 'kernel' in boot ? boot.kernel : undefined);
    const absolute = boot && 'kernel' in boot
      ? { ...vm, boot: { ...boot, kernel: resolve(boot.kernel), ...(boot.initrd !== undefined ? { initrd: resolve(boot.initrd) } : {}) } }
      : vm;
    const seedImage = opts.seedImage !== undefined ? resolve(opts.seedImage) : undefined;
    const args = qemuArgs({ vm: absolute, settings: this.settings, accel, paths, nbdSocket: resolve(opts.nbdSocket), seedImage });
    for (const p of [paths.qmp, paths.qga, paths.pidfile]) await rm(p, { force: true });

    // -daemonize: QEMU returns once the machine is built, with its errors (bad kernel, unreachable
    // export) on our stderr and a non-zero exit; later output goes nowhere but the serial log.
    const { code, stderr } = await runToExit(emulator, args).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') throw new TerminalError('not-found', `VM "${vm.name}": emulator "${emulator}" not found (the site's qemu.emulator; install qemu-system-x86)`);
      throw new TerminalError('invalid-state', `VM "${vm.name}": cannot run emulator "${emulator}": ${e.message}`);
    });
    if (code !== 0) {
      const why = stderr.trim().split('\n').filter((l) => l.trim()).slice(-3).join('; ') || `exit code ${code}`;
      throw new TerminalError('invalid-state', `VM "${vm.name}": QEMU did not start: ${why}`);
    }
    const pid = await readPid(paths.pidfile);
    if (pid === undefined) throw new TerminalError('invalid-state', `VM "${vm.name}": QEMU started but wrote no pidfile ${paths.pidfile}`);
    let g: Guest;
    try {
      g = await this.#attach(vm.name, pid, paths, { accel });
      await g.qmp.execute('cont');
    } catch (e) {
      process.kill(pid, 'SIGKILL');
      await rm(paths.pidfile, { force: true });
      throw e;
    }
    this.#log.info('qemu guest started', { vm: vm.name, pid, accel });
  }

  async #shutdown(g: Guest, opts: PowerOptions): Promise<void> {
    g.requested = true;
    const timeoutMs = opts.timeoutMs ?? this.settings.shutdownTimeoutMs ?? QEMU_DEFAULTS.shutdownTimeoutMs;
    if (opts.force && timeoutMs === 0) return this.#hardStop(g);
    const s = await g.qmp.execute<{ status: string }>('query-status').catch(() => ({ status: 'unknown' }));
    // A paused guest cannot see the power button; stopped at a breakpoint it never would.
    if (s.status === 'paused' || s.status === 'prelaunch') await g.qmp.execute('cont').catch(() => {});
    await g.qmp.execute('system_powerdown').catch((e: unknown) => {
      if (!QmpError.is(e) || e.kind !== 'closed') throw e;
    });
    // Unref'd: the losing timeout of the race must not hold the process (drsite apply) for a minute.
    const stopped = await Promise.race([g.gone.then(() => true), sleep(timeoutMs, undefined, { ref: false }).then(() => false)]);
    if (stopped) return;
    if (!opts.force) {
      throw new TerminalError('invalid-state', `VM "${g.vm}" did not power off within ${timeoutMs} ms of an ACPI power-down (system_powerdown); it is still running. Retry with a longer timeout, or force to stop it hard`);
    }
    this.#log.warn('qemu guest ignored power-down; stopping it hard', { vm: g.vm, timeoutMs });
    await this.#hardStop(g);
  }

  /** `quit` through QMP, then SIGKILL if QEMU does not go. */
  async #hardStop(g: Guest): Promise<void> {
    g.requested = true;
    await this.#quit(g);
  }

  async #quit(g: Guest): Promise<void> {
    g.quitting = true;
    await g.qmp.execute('quit', undefined, { timeoutMs: 5000 }).catch(() => {});
    const gone = await Promise.race([g.gone.then(() => true), sleep(10_000, undefined, { ref: false }).then(() => false)]);
    if (gone) return;
    try {
      process.kill(g.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
    g.qmp.close();
    await g.gone;
  }
}

/** The first `bytes` of a file as latin1 ('' when it is missing). */
async function readHead(path: string, bytes: number): Promise<string> {
  const f = await open(path, 'r').catch(() => undefined);
  if (!f) return '';
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await f.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead).toString('latin1');
  } finally {
    await f.close();
  }
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then((s) => s.isFile(), () => false);
}

async function readPid(pidfile: string): Promise<number | undefined> {
  const text = await readFile(pidfile, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Live (not a zombie) and started with this QMP socket, so a reused pid is not mistaken for it. */
async function isQemuOf(pid: number, qmpSocket: string): Promise<boolean> {
  try {
    const stat_ = await readFile(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat_)) return false;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(qmpSocket.replace(/,/g, ',,'));
  } catch {
    return false;
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      const s = await readFile(`/proc/${pid}/stat`, 'utf8');
      if (/\) Z /.test(s)) return;
    } catch {
      return;
    }
    await sleep(25);
  }
}

function runToExit(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stderr }));
  });
}

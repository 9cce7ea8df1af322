// The `qemu` hypervisor: a VM is a folder `<root>/<vm>/` (vm.json and disk images, as for `files`)
// plus, while it runs, a daemonized qemu-system-x86_64 with its QMP socket, guest-agent socket,
// pidfile and serial console log in the same folder. Disks are the agent's NBD exports; power goes
// through QMP. A guest that stops without being asked is recorded as crashed; nothing here throws
// into the agent for it, and an agent restart re-attaches through the pidfile and QMP socket.
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyedMutex } from '../../../core/async-mutex.ts';
import { readJsonIfExists, writeJsonAtomic } from '../../../core/atomic-file.ts';
import { TerminalError } from '../../../model/errors.ts';
import type { GuestLiveness, Hypervisor, PowerOptions, PowerState, VmDefinition, VmDisk, VmRuntimeStatus } from '../../../model/hypervisor.ts';
import { silentLogger, type Logger } from '../../../transport/logger.ts';
import { FilesHypervisor } from '../files.ts';
import { AccelChoices } from './accel.ts';
import { BootWatch } from './guest-boot.ts';
import { QEMU_DEFAULTS, type Accel, type GuestPaths, type QemuSettings } from './qemu-args.ts';
import { checkStartable, isQemuOf, launchQemu, readPid, waitGone } from './qemu-process.ts';
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

interface CrashRecord {
  at: number;
  message: string;
}

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
  readonly #accels: AccelChoices;

  constructor(root: string, settings: QemuSettings = {}, opts: QemuHypervisorOptions = {}) {
    // Absolute: a daemonized QEMU changes its directory to /, so no path it gets may be relative.
    this.root = resolve(root);
    this.settings = settings;
    this.#defs = new FilesHypervisor(this.root);
    this.#log = opts.log ?? silentLogger;
    this.#onStopped = opts.onStopped;
    this.#accels = new AccelChoices(settings.emulator ?? QEMU_DEFAULTS.emulator, settings.accel ?? QEMU_DEFAULTS.accel, this.#log);
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
    return this.#accels.for({
      machine: this.settings.machine ?? QEMU_DEFAULTS.machine,
      memoryMiB: this.settings.memoryMiB ?? QEMU_DEFAULTS.memoryMiB,
      ...(kernel !== undefined && { kernel: resolve(kernel) }),
    });
  }

  /**
   * Boot signs of a running guest: `alive` once its serial console printed or its guest agent
   * answered, `not-booting` when neither happened within the site's boot timeout of its start.
   */
  liveness(name: string): GuestLiveness | undefined {
    const g = this.#guests.get(name);
    if (!g || g.qmp.isClosed || g.quitting || this.#bootTimeoutMs() === 0) return undefined;
    return g.boot.liveness();
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
      g.boot.stop();
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

  async #attach(name: string, pid: number, paths: GuestPaths, started?: { accel: Accel }): Promise<Guest> {
    const qmp = await QmpClient.connect(paths.qmp).catch((e: unknown) => {
      throw new TerminalError('invalid-state', `VM "${name}": cannot attach to its QEMU (pid ${pid}): ${(e as Error).message}`, { cause: e });
    });
    let resolveGone!: () => void;
    const boot = new BootWatch({ vm: name, attached: !started, ...(started && { accel: started.accel }), timeoutMs: this.#bootTimeoutMs(), paths, log: this.#log, isClosed: () => qmp.isClosed });
    const g: Guest = { vm: name, pid, qmp, requested: false, quitting: false, detached: false, shutdown: undefined, gone: new Promise((r) => (resolveGone = r)), boot };
    qmp.onEvent((e) => {
      if (e.event !== 'SHUTDOWN') return;
      g.shutdown = e.data as Guest['shutdown'];
      // The guest powered itself off; QEMU waits in `shutdown` for the driver to let it go.
      if (g.shutdown?.guest === true && !g.quitting) void this.#quit(g).catch(() => {});
    });
    this.#guests.set(name, g);
    if (this.#bootTimeoutMs() > 0) boot.start();
    void qmp.closed.then(async () => {
      g.boot.stop();
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
    const paths = this.#paths(vm.name);
    await checkStartable(vm, this.settings, opts, paths);
    const boot = vm.boot;
    const { accel } = await this.accel(boot && 'kernel' in boot ? boot.kernel : undefined);
    const pid = await launchQemu(vm, this.settings, opts, paths, accel);
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

// Whether a running guest booted: from its start (or the driver's attaching to it) until its serial
// console prints or its guest agent answers, or QEMU is gone. The driver reports it as liveness:
// `alive`, `booting`, or `not-booting` once the site's boot timeout passed without a sign.
import { open } from 'node:fs/promises';
import type { GuestLiveness } from '../../../model/hypervisor.ts';
import { formatSeconds } from '../../../model/units.ts';
import type { Logger } from '../../../transport/logger.ts';
import { GuestAgentClient } from './guest-agent.ts';
import type { Accel, GuestPaths } from './qemu-args.ts';

/** How often a booting guest's serial log is looked at. */
const BOOT_POLL_MS = 1000;
/** A guest agent ping (only while the console is silent): every few polls, each with this timeout. */
const BOOT_PING_EVERY = 5;
const BOOT_PING_TIMEOUT_MS = 1000;

export interface BootWatchOptions {
  readonly vm: string;
  /** The driver attached to a guest an earlier agent started (rather than starting it). */
  readonly attached: boolean;
  /** The accelerator this driver started it with (unknown for an adopted guest). */
  readonly accel?: Accel;
  /** The site's boot timeout (0: the driver neither starts the watch nor asks it). */
  readonly timeoutMs: number;
  readonly paths: GuestPaths;
  readonly log: Logger;
  /** QEMU's QMP connection closed: nothing more to watch. */
  readonly isClosed: () => boolean;
}

export class BootWatch {
  /** When this driver started the guest, or attached to it. */
  readonly since = Date.now();
  readonly #o: BootWatchOptions;
  /** The first sign seen. */
  #seen: string | undefined;
  /** A guest agent ping is under way. */
  #pinging = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(o: BootWatchOptions) {
    this.#o = o;
  }

  /** Looks for boot signs until one shows: the serial log first (cheap), a guest agent ping now and then. */
  start(): void {
    let polls = 0;
    const look = async () => {
      if (this.#seen || this.#o.isClosed()) return this.stop();
      polls++;
      const head = await readHead(this.#o.paths.serial, 4096);
      if (/\S/.test(head)) return this.#saw('serial console output');
      if (polls % BOOT_PING_EVERY !== 0 || this.#pinging) return;
      this.#pinging = true;
      try {
        const c = await GuestAgentClient.connect(this.#o.paths.qga, this.#o.vm, BOOT_PING_TIMEOUT_MS);
        c.close();
        this.#saw('guest agent answered');
      } catch {
        // No agent (yet, or at all): the serial log may still show the boot.
      } finally {
        this.#pinging = false;
      }
    };
    this.#timer = setInterval(() => void look().catch(() => {}), BOOT_POLL_MS);
    this.#timer.unref();
    void look().catch(() => {});
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  liveness(): GuestLiveness {
    const { since } = this;
    if (this.#seen) return { state: 'alive', since, evidence: this.#seen };
    const elapsed = Date.now() - since;
    const timeout = this.#o.timeoutMs;
    const from = this.#o.attached ? 'the agent attached to it' : `QEMU started it${this.#o.accel ? ` (accel ${this.#o.accel})` : ''}`;
    // Fixed wording once late (no running count): status records an event when a reason's text changes.
    if (elapsed >= timeout) {
      return { state: 'not-booting', since, evidence: `no serial console output and no guest agent reply within ${formatSeconds(timeout)} since ${from}` };
    }
    return { state: 'booting', since, evidence: `no serial console output or guest agent reply yet, ${formatSeconds(elapsed)} since ${from}` };
  }

  #saw(what: string): void {
    if (this.#seen) return;
    this.#seen = what;
    this.stop();
    const late = Date.now() - this.since >= this.#o.timeoutMs;
    if (late) this.#o.log.info('qemu guest booted after its boot timeout', { vm: this.#o.vm, sign: what });
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

// Change tracking for a libvirt domain whose disks checkpoints cannot track (raw images): QEMU's
// own dirty bitmaps (hypervisor/qemu/dirty-bitmap-tracker.ts, the adopted-VM tracker), reached
// through libvirt's monitor passthrough (`virsh qemu-monitor-command`), since libvirt holds the
// domain's one QMP monitor. Those bitmaps live in QEMU's memory: a libvirtd restart keeps them
// (QEMU runs on), but an agent restart adds new ones and a guest restart (a new QEMU process)
// loses them, and either makes the relationship resynchronise. A shut-off domain's cut reads
// every block of its images through qemu-nbd (correct, if costly: no bitmap says what changed).
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CutSource, FrozenSource } from '../../../core/replication/ports.ts';
import { RetryableError, TerminalError } from '../../../model/errors.ts';
import { NbdClient } from '../../../nbd/client.ts';
import type { QmpEvent } from '../qemu/qmp.ts';
import { allExtents, QemuDirtyBitmapSource, type QmpConnection } from '../qemu/dirty-bitmap-tracker.ts';
import { child, children, parseXml } from './domain-xml.ts';
import { domState } from './checkpoint-source.ts';
import type { Virsh } from './virsh.ts';

export const QMP_TRACKING = 'QEMU dirty bitmaps through libvirt monitor passthrough (not persistent): an agent or guest restart makes the relationship resynchronise';

const POLL_MS = 100;

/** QMP over `virsh qemu-monitor-command`: one command per call; events are waited for by polling what they report. */
export class VirshQmp implements QmpConnection {
  readonly isClosed = false;
  readonly #virsh: Virsh;
  readonly #domain: string;

  constructor(virsh: Virsh, domain: string) {
    this.#virsh = virsh;
    this.#domain = domain;
  }

  async execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    const out = await this.#virsh.run(['qemu-monitor-command', this.#domain, JSON.stringify({ execute: command, ...(args && { arguments: args }) })], { domain: this.#domain, ...(opts.timeoutMs !== undefined && { timeoutMs: opts.timeoutMs }) });
    const reply = JSON.parse(out) as { return?: T; error?: { desc?: string } };
    if (reply.error) throw new TerminalError('invalid-state', `libvirt domain "${this.#domain}": QMP ${command}: ${reply.error.desc ?? 'error'}`);
    return reply.return as T;
  }

  /**
   * The two events the tracker waits for, as what they report: an export gone from
   * query-block-exports, a job gone from query-block-jobs. Resolves once nothing present matches.
   */
  async waitForEvent(name: string, opts: { timeoutMs: number; filter?: (e: QmpEvent) => boolean }): Promise<QmpEvent> {
    const probe = name === 'BLOCK_EXPORT_DELETED'
      ? async () => (await this.execute<{ id: string }[]>('query-block-exports')).map((x) => ({ id: x.id }))
      : name === 'BLOCK_JOB_CANCELLED'
        ? async () => (await this.execute<{ device: string }[]>('query-block-jobs')).map((x) => ({ device: x.device }))
        : undefined;
    if (!probe) throw new TerminalError('invalid-argument', `libvirt domain "${this.#domain}": cannot wait for QMP event ${name} through virsh`);
    const until = Date.now() + opts.timeoutMs;
    for (;;) {
      const present = await probe();
      const matching = present.filter((data) => opts.filter?.({ event: name, data, at: Date.now() }) ?? true);
      if (!matching.length) return { event: name, data: {}, at: Date.now() };
      if (Date.now() > until) throw new TerminalError('invalid-state', `libvirt domain "${this.#domain}": ${name} not seen within ${opts.timeoutMs} ms`);
      await sleep(POLL_MS);
    }
  }

  close(): void {}
}

export interface QmpSourceOptions {
  readonly virsh: Virsh;
  readonly domain: string;
  readonly workDir: string;
  readonly qemuGroup?: number;
  readonly disks: readonly { readonly target: string; readonly image: string; readonly format: string; readonly size: number }[];
  readonly onContinuityLost?: (why: string) => Promise<void>;
}

/** Each disk's QEMU block node (its format node, what the guest device writes through), by target. */
async function nodesOf(virsh: Virsh, qmp: VirshQmp, domain: string): Promise<Map<string, string>> {
  const live = parseXml(await virsh.run(['dumpxml', domain], { domain }), `libvirt domain "${domain}"`);
  const aliasOf = new Map(children(child(live, 'devices'), 'disk').map((d) => [child(d, 'target')?.attrs.dev ?? '', child(d, 'alias')?.attrs.name ?? '']));
  const blocks = await qmp.execute<{ qdev?: string; device?: string; inserted?: { 'node-name'?: string } }[]>('query-block');
  const out = new Map<string, string>();
  for (const [target, alias] of aliasOf) {
    const b = blocks.find((x) => x.qdev === alias || x.qdev?.startsWith(`/machine/peripheral/${alias}/`));
    const node = b?.inserted?.['node-name'];
    if (node) out.set(target, node);
  }
  return out;
}

export class LibvirtQmpSource implements CutSource {
  readonly disks: readonly { readonly id: string; readonly size: number; pendingBytes(): number }[];
  readonly tracking = QMP_TRACKING;
  readonly #opts: QmpSourceOptions;
  #inner: QemuDirtyBitmapSource | undefined;

  private constructor(opts: QmpSourceOptions, inner: QemuDirtyBitmapSource | undefined) {
    this.#opts = opts;
    this.#inner = inner;
    this.disks = opts.disks.map((d) => ({ id: d.target, size: d.size, pendingBytes: () => this.#inner?.disks.find((x) => x.id === d.target)?.pendingBytes() ?? 0 }));
  }

  /**
   * Starts tracking a running domain: one new bitmap per disk, added in one transaction. With
   * `restarted` (an agent starting again on a domain it protected), a shut-off domain is taken too:
   * nothing tracked what it wrote while no agent ran, so its first cut asks for a resync (read
   * from its images through qemu-nbd) instead of the relationship waiting for the domain to run.
   */
  static async open(opts: QmpSourceOptions, restarted = false): Promise<LibvirtQmpSource> {
    if ((await domState(opts.virsh, opts.domain)) === 'shut off') {
      if (!restarted) throw new TerminalError('invalid-state', `libvirt domain "${opts.domain}" is shut off: start it to begin protection (its raw disks are tracked by QEMU's dirty bitmaps, which need it running)`);
      const src = new LibvirtQmpSource(opts, undefined);
      src.#unknown = `libvirt domain "${opts.domain}" was shut off when the agent started again: no QEMU dirty bitmap saw what it wrote while no agent ran`;
      return src;
    }
    return new LibvirtQmpSource(opts, await LibvirtQmpSource.#adopt(opts));
  }

  /** Why the writes since the last point are unknown, until a full cut (the resync) is taken. */
  #unknown: string | undefined;

  static async #adopt(opts: QmpSourceOptions): Promise<QemuDirtyBitmapSource> {
    const qmp = new VirshQmp(opts.virsh, opts.domain);
    const nodes = await nodesOf(opts.virsh, qmp, opts.domain);
    const disks = opts.disks.map((d) => {
      const node = nodes.get(d.target);
      if (!node) throw new TerminalError('invalid-state', `libvirt domain "${opts.domain}": QEMU shows no block node for disk ${d.target}`);
      return { id: d.target, node };
    });
    return QemuDirtyBitmapSource.adopt({
      qmpSocket: `libvirt domain "${opts.domain}"`,
      connect: async () => qmp,
      disks,
      workDir: opts.workDir,
      onScratchFile: async (path) => {
        if (opts.qemuGroup !== undefined) await chown(path, process.getuid?.() ?? 0, opts.qemuGroup);
        await chmod(path, 0o660);
      },
      ...(opts.onContinuityLost && { onContinuityLost: opts.onContinuityLost }),
    });
  }

  async cut(opts: { cutId: string; time: number; full?: boolean }): ReturnType<CutSource['cut']> {
    const { virsh, domain } = this.#opts;
    if (this.#unknown) {
      if (!opts.full) {
        await this.#opts.onContinuityLost?.(this.#unknown);
        throw new RetryableError('integrity', `${this.#unknown}: resynchronization required`);
      }
      this.#unknown = undefined;
    }
    if ((await domState(virsh, domain)) === 'shut off') return this.#offlineCut(opts);
    if (!this.#inner) {
      // QEMU started again after the domain was off: new bitmaps, which say nothing of what it
      // wrote before they were added, so the relationship resynchronises.
      this.#inner = await LibvirtQmpSource.#adopt(this.#opts);
      if (!opts.full) {
        const why = `libvirt domain "${domain}" was started again: its QEMU dirty bitmaps are new, so writes since its start are unknown`;
        await this.#opts.onContinuityLost?.(why);
        throw new RetryableError('integrity', `${why}: resynchronization required`);
      }
    }
    return this.#inner.cut(opts);
  }

  /** Removes drsite's bitmaps from QEMU (they would not outlive it anyway). */
  async close(): Promise<void> {
    await this.#inner?.close().catch(() => {});
  }

  async forget(): Promise<void> {
    await this.close();
    await rm(this.#opts.workDir, { recursive: true, force: true });
  }

  /** A shut-off domain: every block of its images (no bitmap knows what changed), read through qemu-nbd. */
  async #offlineCut(opts: { time: number }): ReturnType<CutSource['cut']> {
    const { domain, workDir } = this.#opts;
    if (this.#inner) {
      // QEMU has gone, and its bitmaps with it: the next running QEMU gets new ones.
      await this.#inner.close().catch(() => {});
      this.#inner = undefined;
    }
    const procs: ChildProcess[] = [];
    const clients: NbdClient[] = [];
    const teardown = async () => {
      for (const c of clients) await c.close().catch(() => {});
      for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
      await sleep(50);
    };
    try {
      for (const d of this.#opts.disks) {
        const socket = join(workDir, `offline-${d.target}.sock`);
        await rm(socket, { force: true });
        const p = spawn('qemu-nbd', ['-r', '-f', d.format, '--socket', socket, '-x', d.target, '--shared=1', d.image], { stdio: 'ignore' });
        p.once('error', () => {});
        procs.push(p);
        let c: NbdClient | undefined;
        for (let i = 0; i < 200 && !c && p.exitCode === null; i++) {
          c = await NbdClient.connect(socket, d.target, { metaContexts: ['base:allocation'] }).catch(() => undefined);
          if (!c) await sleep(50);
        }
        if (!c) throw new TerminalError('invalid-state', `libvirt domain "${domain}": cannot read disk ${d.target} (${d.image}) while the domain is off`);
        clients.push(c);
      }
    } catch (e) {
      await teardown();
      throw e;
    }
    const disks: FrozenSource[] = this.#opts.disks.map((d, i) => ({ diskId: d.target, size: d.size, extents: (onProgress) => allExtents(clients[i]!, onProgress) }));
    return { time: opts.time, disks, release: teardown, abandon: teardown };
  }
}

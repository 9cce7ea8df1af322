// Change tracking for a libvirt domain drsite did not create, without restarting its guest:
// libvirt checkpoints (persistent dirty bitmaps inside the qcow2 images) and pull-mode backup jobs.
// Each cut is one `virsh backup-begin` that, in one step, creates the next checkpoint and exports
// over NBD a point-in-time view of every disk (copy-before-write into a scratch file) with the
// blocks changed since the previous checkpoint as `qemu:dirty-bitmap:backup-<disk>`. A shut-off
// domain (a planned failover's last delta) is read from its images with qemu-nbd, whose
// `--bitmap` exports the persistent bitmap QEMU saved at shutdown. Checkpoints survive libvirtd,
// agent and guest restarts, so continuity survives them too; a bitmap libvirt or QEMU no longer
// trusts (a crash left it inconsistent, someone deleted the checkpoint) makes the relationship
// resynchronise, reported once through onContinuityLost.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { chmod, chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CutSource, FrozenSource } from '../../../core/replication/ports.ts';
import { BLOCK_SIZE } from '../../../core/types.ts';
import { RetryableError, TerminalError } from '../../../model/errors.ts';
import { NbdClient } from '../../../nbd/client.ts';
import { allExtents, dirtyExtents } from '../qemu/dirty-bitmap-tracker.ts';
import { child, children, parseXml, readDomain, untrackableReason, type DomainDisk } from './domain-xml.ts';
import type { Virsh } from './virsh.ts';

const run = promisify(execFile);

/** Prefix of the checkpoints drsite makes; a domain's other checkpoints are left alone. */
const PREFIX = 'drsite-';

export const CHECKPOINT_TRACKING = 'libvirt checkpoints (persistent dirty bitmaps in qcow2): survive libvirtd, agent and guest restarts';

export interface CheckpointSourceOptions {
  readonly virsh: Virsh;
  readonly domain: string;
  /** Where the backup job's NBD socket and scratch files go: a folder the domain's QEMU may write. */
  readonly workDir: string;
  /** Group of the QEMU processes libvirt runs (workDir is made theirs). */
  readonly qemuGroup?: number;
  readonly onContinuityLost?: (why: string) => Promise<void>;
  /** Disks of the domain that are not tracked (excluded): named with backup='no' and checkpoint='no'. */
  readonly excluded?: readonly string[];
}

interface TrackedDisk extends DomainDisk {
  readonly size: number;
  /** Path of the image for offline reads (file, block, or a volume's path). */
  readonly image: string;
}

interface OpenCut {
  readonly next: string | undefined;
  readonly base: string | undefined;
  readonly clients: NbdClient[];
  readonly nbd: ChildProcess[];
  readonly online: boolean;
}

export interface DomainCheck {
  readonly info: ReturnType<typeof readDomain>;
  /** The disks that replicate (every disk but the excluded ones). */
  readonly disks: readonly TrackedDisk[];
  /** Disks left out (ProtectedVM disks.exclude): not checked, tracked or replicated. */
  readonly excluded: readonly string[];
  /** The inactive (persistent) definition, as it is replicated for failover. */
  readonly inactiveXml: string;
}

/**
 * Checks that `domain` can be protected: it exists, is persistent, and every disk is one
 * checkpoints can track. Each refusal is one error naming the domain (and the disk).
 */
export async function checkDomain(virsh: Virsh, domain: string, exclude: readonly string[] = []): Promise<DomainCheck> {
  const dominfo = await virsh.run(['dominfo', domain], { domain });
  if (/^Persistent:\s+no/m.test(dominfo)) {
    throw new TerminalError('invalid-argument', `libvirt domain "${domain}" at ${virsh.uri} is transient (created with virsh create, not defined): it has no definition to replicate or to come back to; define it with \`virsh dumpxml ${domain} > ${domain}.xml && virsh define ${domain}.xml\``);
  }
  const inactiveXml = await virsh.run(['dumpxml', '--inactive', domain], { domain });
  const info = readDomain(inactiveXml, `libvirt domain "${domain}"`);
  if (!info.disks.length) throw new TerminalError('invalid-argument', `libvirt domain "${domain}" at ${virsh.uri} has no disks to replicate`);
  for (const x of exclude) {
    if (!info.disks.some((d) => d.target === x)) throw new TerminalError('invalid-argument', `libvirt domain "${domain}" has no disk ${x} to exclude (its disks: ${info.disks.map((d) => d.target).join(', ')})`);
  }
  const disks: TrackedDisk[] = [];
  for (const d of info.disks.filter((x) => !exclude.includes(x.target))) {
    const why = untrackableReason(d);
    if (why) throw new TerminalError('invalid-argument', `libvirt domain "${domain}": disk ${d.target} cannot be tracked: ${why}`);
    const image = d.volume ? (await virsh.run(['vol-path', '--pool', d.volume.pool, d.volume.volume], { domain })).trim() : d.path;
    if (!image) throw new TerminalError('invalid-argument', `libvirt domain "${domain}": disk ${d.target} has no source image`);
    const size = capacity(await virsh.run(['domblkinfo', domain, d.target], { domain }));
    if (!size || size % BLOCK_SIZE) throw new TerminalError('invalid-argument', `libvirt domain "${domain}": disk ${d.target} has size ${size}, not a multiple of ${BLOCK_SIZE}`);
    disks.push({ ...d, size, image });
  }
  if (!disks.length) throw new TerminalError('invalid-argument', `libvirt domain "${domain}": every disk is excluded`);
  return { info, disks, excluded: [...exclude], inactiveXml };
}

function capacity(domblkinfo: string): number {
  return Number(/^Capacity:\s+(\d+)/m.exec(domblkinfo)?.[1] ?? 0);
}

export class LibvirtCheckpointSource implements CutSource {
  readonly disks: readonly { readonly id: string; readonly size: number; pendingBytes(): number }[];
  readonly tracking = CHECKPOINT_TRACKING;
  readonly #opts: CheckpointSourceOptions;
  readonly #tracked: readonly TrackedDisk[];
  readonly #pending = new Map<string, number>();
  /** The checkpoint whose bitmaps hold every write since the last released cut. */
  #base: string | undefined;
  #lost: string | undefined;
  #open: OpenCut | undefined;

  private constructor(opts: CheckpointSourceOptions, tracked: readonly TrackedDisk[], base: string | undefined) {
    this.#opts = opts;
    this.#tracked = tracked;
    this.#base = base;
    this.disks = tracked.map((d) => ({ id: d.target, size: d.size, pendingBytes: () => this.#pending.get(d.target) ?? 0 }));
  }

  /**
   * Starts (or resumes) tracking: drsite's newest checkpoint of the domain is the base when there
   * is one (an agent restart loses nothing); otherwise a first checkpoint is made now, which
   * requires the domain to run.
   */
  static async open(opts: CheckpointSourceOptions, disks: readonly TrackedDisk[]): Promise<LibvirtCheckpointSource> {
    await mkdir(opts.workDir, { recursive: true, mode: 0o770 });
    if (opts.qemuGroup !== undefined) await chown(opts.workDir, process.getuid?.() ?? 0, opts.qemuGroup);
    await chmod(opts.workDir, 0o770);
    const ours = await listCheckpoints(opts.virsh, opts.domain);
    const base = ours.at(-1);
    const source = new LibvirtCheckpointSource(opts, disks, base);
    if (!base) {
      if ((await domState(opts.virsh, opts.domain)) === 'shut off') {
        throw new TerminalError('invalid-state', `libvirt domain "${opts.domain}" is shut off: start it to begin protection (libvirt makes checkpoints of running domains only)`);
      }
      await opts.virsh.run(['checkpoint-create', opts.domain, '--xmlfile', await source.#writeCheckpointXml(`${PREFIX}1`)], { domain: opts.domain });
      source.#base = `${PREFIX}1`;
    }
    return source;
  }

  /** Whether the base checkpoint's bitmaps are still trusted; refreshes pendingBytes while the domain runs. */
  async verify(): Promise<{ continuity: 'intact' } | { continuity: 'lost'; why: string }> {
    if (this.#lost) return { continuity: 'lost', why: this.#lost };
    const { virsh, domain } = this.#opts;
    if (!this.#base) return this.#loseTrust('no checkpoint of drsite is left on the domain');
    if (!(await listCheckpoints(virsh, domain)).includes(this.#base)) {
      return this.#loseTrust(`checkpoint ${this.#base} of libvirt domain "${domain}" is gone (deleted outside drsite): writes since the last cut are unknown`);
    }
    if ((await domState(virsh, domain)) === 'shut off') return { continuity: 'intact' };
    let xml: string;
    try {
      xml = await virsh.run(['checkpoint-dumpxml', domain, this.#base, '--size', '--no-domain'], { domain });
    } catch (e) {
      if (RetryableError.is(e)) throw e;
      // Shutting down meanwhile: nothing is lost, the next cut reads the shut-off images.
      const now = await domState(virsh, domain);
      if (now !== 'running' && now !== 'paused') throw new RetryableError('busy', `libvirt domain "${domain}" is ${now}: its cut waits until it is shut off or running`);
      if (!/bitmap|checkpoint/i.test((e as Error).message)) throw new RetryableError('busy', (e as Error).message, { cause: e });
      return this.#loseTrust(`libvirt cannot read checkpoint ${this.#base} of domain "${domain}" (its bitmap is missing or inconsistent, e.g. after a crash): ${(e as Error).message}`);
    }
    for (const d of children(child(parseXml(xml, 'checkpoint'), 'disks'), 'disk')) {
      if (d.attrs.size !== undefined && d.attrs.name) this.#pending.set(d.attrs.name, Number(d.attrs.size));
    }
    return { continuity: 'intact' };
  }

  async cut(opts: { cutId: string; time: number; full?: boolean }): Promise<{
    readonly time: number;
    readonly disks: readonly FrozenSource[];
    release(): Promise<void>;
    abandon(): Promise<void>;
  }> {
    const { virsh, domain } = this.#opts;
    if (this.#open) throw new TerminalError('invalid-state', `cut ${opts.cutId}: the previous cut of libvirt domain "${domain}" is still open`);
    const full = opts.full ?? false;
    const state = await this.verify();
    if (state.continuity === 'lost' && !full) {
      throw new RetryableError('integrity', `changes of libvirt domain "${domain}" cannot be trusted (${state.why}): resynchronization required`);
    }
    const online = (await domState(virsh, domain)) !== 'shut off';
    const base = state.continuity === 'intact' ? this.#base : undefined;
    const incremental = !full && base !== undefined;
    const open: OpenCut = { next: online ? nextName(this.#base) : undefined, base, clients: [], nbd: [], online };
    this.#open = open;
    try {
      if (online) await this.#beginBackup(open, incremental);
      else await this.#serveImages(open, incremental);
    } catch (e) {
      await this.#teardown(open).catch(() => {});
      this.#open = undefined;
      if (open.next) await virsh.run(['checkpoint-delete', domain, open.next], { domain }).catch(() => {});
      // The domain started or stopped under the cut (a power-off in progress, say): tried again.
      const now = await domState(virsh, domain).catch(() => undefined);
      if (!RetryableError.is(e) && now !== undefined && (now === 'shut off') !== !online) {
        throw new RetryableError('busy', `libvirt domain "${domain}" changed state during the cut (now ${now}): ${(e as Error).message}`, { cause: e });
      }
      throw e;
    }
    return {
      time: opts.time,
      disks: this.#tracked.map((d, i) => {
        const c = open.clients[i]!;
        const context = online ? `qemu:dirty-bitmap:backup-${d.target}` : `qemu:dirty-bitmap:${base}`;
        return { diskId: d.target, size: d.size, extents: (onProgress) => (incremental ? dirtyExtents(c, context, onProgress) : allExtents(c, onProgress)) };
      }),
      release: () => this.#finish(open, 'release', full),
      abandon: () => this.#finish(open, 'abandon', full),
    };
  }

  /** Lets go of the domain; its checkpoints stay, so the next agent goes on from them. */
  async close(): Promise<void> {
    if (this.#open) await this.#finish(this.#open, 'abandon', false).catch(() => {});
  }

  /** Stops tracking for good: drsite's checkpoints of the domain are deleted (their bitmaps too). */
  async forget(): Promise<void> {
    await this.close();
    const { virsh, domain } = this.#opts;
    for (const c of (await listCheckpoints(virsh, domain).catch(() => [] as string[])).reverse()) {
      // libvirt deletes the bitmaps of a running domain's checkpoint only; a shut-off domain's
      // metadata goes, and its bitmaps are removed from the images with qemu-img.
      const deleted = await virsh.run(['checkpoint-delete', domain, c], { domain }).then(() => true, () => false);
      if (deleted) continue;
      await virsh.run(['checkpoint-delete', domain, c, '--metadata'], { domain }).catch(() => {});
      for (const d of this.#tracked) await run('qemu-img', ['bitmap', '--remove', '-f', d.format, d.image, c]).catch(() => {});
    }
    await rm(this.#opts.workDir, { recursive: true, force: true });
  }

  async #beginBackup(open: OpenCut, incremental: boolean): Promise<void> {
    const { virsh, domain, workDir } = this.#opts;
    const socket = join(workDir, 'backup.sock');
    await rm(socket, { force: true });
    const scratch = (d: TrackedDisk) => join(workDir, `scratch-${d.target}.qcow2`);
    for (const d of this.#tracked) await rm(scratch(d), { force: true });
    const backupXml = [
      `<domainbackup mode='pull'>`,
      ...(incremental ? [`  <incremental>${open.base}</incremental>`] : []),
      `  <server transport='unix' socket='${socket}'/>`,
      '  <disks>',
      ...this.#tracked.map((d) => `    <disk name='${d.target}' backup='yes' type='file'><scratch file='${scratch(d)}'/></disk>`),
      ...(this.#opts.excluded ?? []).map((t) => `    <disk name='${t}' backup='no'/>`),
      '  </disks>',
      '</domainbackup>',
    ].join('\n');
    const backupFile = join(workDir, 'backup.xml');
    await writeFile(backupFile, backupXml);
    // The checkpoint is created by the same call that starts the job: the cut is atomic across disks.
    await virsh.run(['backup-begin', domain, '--backupxml', backupFile, '--checkpointxml', await this.#writeCheckpointXml(open.next!)], { domain });
    const job = parseXml(await virsh.run(['backup-dumpxml', domain], { domain }), 'backup job');
    for (const d of this.#tracked) {
      const entry = children(child(job, 'disks'), 'disk').find((x) => x.attrs.name === d.target);
      const exportName = entry?.attrs.exportname ?? d.target;
      const bitmap = entry?.attrs.exportbitmap ?? `backup-${d.target}`;
      if (incremental && bitmap !== `backup-${d.target}`) throw new TerminalError('invalid-state', `libvirt domain "${domain}": backup job exports bitmap ${bitmap} for disk ${d.target}, not backup-${d.target}`);
      open.clients.push(await NbdClient.connect(socket, exportName, { metaContexts: [incremental ? `qemu:dirty-bitmap:backup-${d.target}` : 'base:allocation'] }));
    }
  }

  /** A shut-off domain: each image served read-only by qemu-nbd, with the base checkpoint's persistent bitmap. */
  async #serveImages(open: OpenCut, incremental: boolean): Promise<void> {
    const { domain, workDir } = this.#opts;
    for (const d of this.#tracked) {
      const socket = join(workDir, `offline-${d.target}.sock`);
      await rm(socket, { force: true });
      const args = ['-r', '-f', d.format, '--socket', socket, '-x', d.target, '--cache=none', '--aio=threads', '--shared=1', ...(incremental ? ['--bitmap', open.base!] : []), d.image];
      const proc = spawn('qemu-nbd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
      open.nbd.push(proc);
      let stderr = '';
      proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number>((r) => proc.once('exit', (code) => r(code ?? 1)));
      proc.once('error', () => {});
      let client: NbdClient | undefined;
      for (let i = 0; i < 200 && !client; i++) {
        if (proc.exitCode !== null) break;
        client = await NbdClient.connect(socket, d.target, { metaContexts: [incremental ? `qemu:dirty-bitmap:${open.base}` : 'base:allocation'] }).catch(() => undefined);
        if (!client) await Promise.race([sleep(50), exited]);
      }
      if (!client) {
        const why = stderr.trim() || `qemu-nbd exited with ${proc.exitCode}`;
        // A bitmap qemu-nbd refuses (missing, or in use/inconsistent after a crash) is a lost chain.
        if (incremental && /bitmap/i.test(why)) {
          await this.#loseTrust(`the persistent bitmap ${open.base} of disk ${d.target} of libvirt domain "${domain}" cannot be read from ${d.image}: ${why}`);
          throw new RetryableError('integrity', `libvirt domain "${domain}": changes since checkpoint ${open.base} cannot be read: resynchronization required`);
        }
        throw new TerminalError('invalid-state', `libvirt domain "${domain}": cannot read disk ${d.target} (${d.image}) while the domain is off: ${why}`);
      }
      open.clients.push(client);
    }
  }

  /**
   * Released: the new checkpoint is the base and the old one goes (its blocks shipped). Abandoned:
   * the new one is deleted, which merges its bitmap into the old one, to ship next time. A cut of a
   * shut-off domain made no checkpoint: the base stays and its blocks ship again (a superset).
   */
  async #finish(open: OpenCut, how: 'release' | 'abandon', full: boolean): Promise<void> {
    if (this.#open !== open) return;
    this.#open = undefined;
    await this.#teardown(open);
    const { virsh, domain } = this.#opts;
    if (!open.next) {
      if (how === 'release' && full) this.#lost = undefined;
      return;
    }
    if (how === 'abandon') {
      await virsh.run(['checkpoint-delete', domain, open.next], { domain });
      return;
    }
    this.#base = open.next;
    // Older ones of drsite's go too (after a resync, the untrusted chain).
    for (const c of (await listCheckpoints(virsh, domain)).filter((c) => c !== open.next).reverse()) {
      await virsh.run(['checkpoint-delete', domain, c], { domain });
    }
    if (full) this.#lost = undefined;
  }

  async #teardown(open: OpenCut): Promise<void> {
    const { virsh, domain, workDir } = this.#opts;
    for (const c of open.clients) await c.close().catch(() => {});
    if (open.online) {
      // Ending a pull-mode backup is aborting its job; the scratch files then go.
      await virsh.run(['domjobabort', domain], { domain }).catch(() => {});
      for (const d of this.#tracked) await rm(join(workDir, `scratch-${d.target}.qcow2`), { force: true });
    }
    for (const p of open.nbd) {
      if (p.exitCode === null) {
        const gone = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        await Promise.race([gone, sleep(5000)]);
        if (p.exitCode === null) p.kill('SIGKILL');
      }
    }
  }

  async #writeCheckpointXml(name: string): Promise<string> {
    const file = join(this.#opts.workDir, 'checkpoint.xml');
    await writeFile(file, [`<domaincheckpoint>`, `  <name>${name}</name>`, '  <disks>', ...this.#tracked.map((d) => `    <disk name='${d.target}' checkpoint='bitmap'/>`), ...(this.#opts.excluded ?? []).map((t) => `    <disk name='${t}' checkpoint='no'/>`), '  </disks>', '</domaincheckpoint>'].join('\n'));
    return file;
  }

  async #loseTrust(why: string): Promise<{ continuity: 'lost'; why: string }> {
    if (!this.#lost) {
      this.#lost = why;
      await this.#opts.onContinuityLost?.(why);
    }
    return { continuity: 'lost', why };
  }
}

/** drsite's checkpoints of the domain, oldest first. */
async function listCheckpoints(virsh: Virsh, domain: string): Promise<string[]> {
  const out = await virsh.run(['checkpoint-list', domain, '--name'], { domain });
  return out.split('\n').map((l) => l.trim()).filter((n) => n.startsWith(PREFIX) && /^\d+$/.test(n.slice(PREFIX.length))).sort((a, b) => gen(a) - gen(b));
}

const gen = (name: string): number => Number(name.slice(PREFIX.length));
const nextName = (base: string | undefined): string => `${PREFIX}${(base ? gen(base) : 0) + 1}`;

export async function domState(virsh: Virsh, domain: string): Promise<string> {
  return (await virsh.run(['domstate', domain], { domain })).trim();
}

// `drsite run`: the reconcile loop with a live view. On a terminal: progress bars (cli-progress)
// for initial replication and resync, then a status table refreshed every pass; otherwise plain
// lines, one per change. Stops at --until converged, --duration, or Ctrl-C (SIGINT / SIGTERM).
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import { loadDesiredState } from '../config/index.ts';
import { formatDiagnostic } from '../model/diagnostics.ts';
import { TerminalError } from '../model/errors.ts';
import type { ObservedRelationship } from '../model/observed.ts';
import { parseDuration } from '../model/units.ts';
import { runLoop } from '../reconciler/loop.ts';
import { ReplicationMetrics } from '../reconciler/metrics.ts';
import { openSession } from '../reconciler/session.ts';
import { isEtcdUrl } from '../vault/etcd.ts';
import { startSampleCompanion } from '../demo/sample-vms.ts';
import type { GlobalOptions } from './main.ts';
import { describeError, type Io } from './output.ts';
import { readStatus, statusTable } from './status.ts';
import { waitLockMs } from './wait-lock.ts';

export interface RunFlags {
  until?: 'converged';
  duration?: string;
  poll: string;
  metricsPort?: string;
  samples: boolean;
  leaderTtl: string;
}

function duration(text: string, flag: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) throw new TerminalError('invalid-argument', `${flag} ${JSON.stringify(text)} is not a duration such as 30s or 10m`);
  return ms;
}

const progressOf = (r: ObservedRelationship): { done: number; total: number; what: string } | undefined =>
  r.initialReplication && r.initialReplication.bytesTotal > 0
    ? { done: r.initialReplication.bytesDone, total: r.initialReplication.bytesTotal, what: 'initial replication' }
    : undefined;

/**
 * With the vault in etcd, several `drsite run` (one per site) elect a leader: the others stand by
 * until its lease lapses. A leader that loses its lease (it stalled, or lost etcd) stops acting
 * at once and stands by again.
 */
export async function runCommand(paths: string[], flags: RunFlags, g: GlobalOptions, io: Io): Promise<number> {
  for (;;) {
    const code = await runTerm(paths, flags, g, io);
    if (code !== LEASE_LOST) return code;
    io.out(`lost the lead of ${g.vault}; standing by again`);
  }
}

const LEASE_LOST = -1;

async function runTerm(paths: string[], flags: RunFlags, g: GlobalOptions, io: Io): Promise<number> {
  const durationMs = flags.duration === undefined ? undefined : duration(flags.duration, '--duration');
  const pollMs = duration(flags.poll, '--poll');
  const loaded = await loadDesiredState(paths);
  for (const d of loaded.diagnostics) io.err(formatDiagnostic(d));
  if (!loaded.ok) return 1;

  const tty = process.stdout.isTTY === true && g.output !== 'json';
  const bars = tty ? new MultiBar({ format: ' {name} [{bar}] {percentage}% {what}', hideCursor: true, clearOnComplete: false }, Presets.shades_classic) : undefined;
  let barsShown = bars !== undefined;
  const stopBars = () => {
    if (barsShown) bars!.stop();
    barsShown = false;
  };
  const say = (line: string) => (barsShown ? bars!.log(`${line}\n`) : io.out(line));
  const started = Date.now();
  const stop = new AbortController();
  let lost = false;
  const elected = isEtcdUrl(g.vault!);
  const session = await openSession({ desired: loaded.state, vaultPath: g.vault!, stateDir: g.stateDir, report: say,
    command: 'drsite run', waitLockMs: elected && g.waitLock === undefined ? Infinity : waitLockMs(g),
    ...(elected && { leaseTtlMs: duration(flags.leaderTtl, '--leader-ttl') }),
    onLeaseLost: () => {
      lost = elected;
      stop.abort();
    },
    ...(flags.samples && { companion: (sites) => startSampleCompanion(paths, sites, say) }) });
  if (elected) say(`leading ${g.vault} (pid ${process.pid})`);
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const metrics = flags.metricsPort === undefined ? undefined : new ReplicationMetrics();
  const served = metrics && (await metrics.serve(Number(flags.metricsPort)));
  if (served) say(`metrics on http://127.0.0.1:${served.port}/metrics`);

  const last = new Map<string, string>();
  const progress = new Map<string, SingleBar>();
  let convergedAt: number | undefined;
  let lastProblems = '';
  try {
    const result = await runLoop({
      desired: session.desired,
      sites: session.sites,
      vault: session.vault,
      stateDir: session.stateDir,
      report: say,
      pollMs,
      ...(durationMs !== undefined && { durationMs }),
      untilConverged: flags.until === 'converged',
      reload: async () => {
        const next = await loadDesiredState(paths);
        const problems = next.diagnostics.map((d) => formatDiagnostic(d)).join('\n');
        if (problems !== lastProblems && problems) say(next.ok ? problems : `declarations do not load; keeping the previous ones:\n${problems}`);
        lastProblems = problems;
        return next.ok ? next.state : undefined;
      },
      signal: stop.signal,
      onError: (e, retryIn) => say(`pass failed, retrying in ${Math.round(retryIn / 1000)}s: ${describeError(e, g.debug)}`),
      onPass: (r) => {
        metrics?.update(r.observation);
        if (r.converged && convergedAt === undefined) convergedAt = Date.now();
        for (const w of r.plan.warnings) {
          const key = `warn:${w.target.kind}/${w.target.name}:${w.code}`;
          if (last.get(key) !== w.message) say(`warning: ${w.target.kind} ${w.target.name}: ${w.message}`);
          last.set(key, w.message);
        }
        for (const [name, rel] of Object.entries(r.observation.observed.relationships)) {
          const p = progressOf(rel);
          if (bars && p) {
            let bar = progress.get(name);
            if (!bar) progress.set(name, (bar = bars.create(p.total, p.done, { name: name.padEnd(12), what: p.what })));
            bar.setTotal(p.total);
            bar.update(p.done, { what: p.what });
          } else if (bars && progress.has(name) && !p) {
            const bar = progress.get(name)!;
            bar.update(bar.getTotal(), { what: rel.state });
          }
          const decile = p ? Math.floor((10 * p.done) / p.total) : -1;
          const line = `${name}: ${rel.direction.primary} -> ${rel.direction.replica} ${rel.state} ${rel.health}${p ? ` ${decile * 10}%` : ''}${rel.lagSeconds !== undefined && rel.state === 'Replicating' ? '' : ''}`;
          if (!bars && last.get(name) !== line) io.out(line);
          if (bars && last.get(name) !== line && !p) say(line);
          last.set(name, line);
        }
        if (tty && r.converged && flags.until !== 'converged') {
          stopBars();
          process.stdout.write(`\x1b[2J\x1b[H${statusTable(readStatus(session.vault))}\n(Ctrl-C to stop)\n`);
        }
      },
    });
    if (result.converged && flags.until === 'converged') await session.quiesce();
    // The bars go first: a line handed to bars.log() only shows at their next redraw, which a
    // stopped MultiBar never does (on a terminal the run then ended without a word).
    stopBars();
    if (result.converged && flags.until === 'converged') {
      io.out(`converged in ${((convergedAt ?? Date.now()) - started) / 1000}s: every ProtectedVM is Replicating with health Normal`);
    } else if (flags.until === 'converged') {
      io.out(`stopped by ${result.stoppedBy} before converging`);
    }
    if (lost) return LEASE_LOST;
    if (!tty || flags.until === 'converged') io.out(statusTable(readStatus(session.vault)));
    return flags.until === 'converged' && !result.converged ? 1 : 0;
  } finally {
    stopBars();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    served?.server.close();
    await session.close();
  }
}

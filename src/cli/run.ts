// `drsite run`: the reconcile loop with a live view. On a terminal: progress bars (cli-progress)
// for initial replication and resync, then a status table refreshed every pass; otherwise plain
// lines, one per change. Stops at --until converged, --duration, or Ctrl-C (SIGINT / SIGTERM):
// the first signal ends the loop after the pass in progress, waiting at most STOP_GRACE_MS for it;
// a second signal exits at once. Either way journaled work resumes on the next run, as after a kill.
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import { loadDesiredState } from '../config/index.ts';
import { formatDiagnostic } from '../model/diagnostics.ts';
import { TerminalError } from '../model/errors.ts';
import type { ObservedRelationship } from '../model/observed.ts';
import { parseDuration } from '../model/units.ts';
import { runLoop } from '../reconciler/loop.ts';
import { ReplicationMetrics } from '../reconciler/metrics.ts';
import { LOOP_COMMAND } from '../reconciler/reconcile-lease.ts';
import { openSession } from '../reconciler/session.ts';
import { isEtcdUrl } from '../vault/etcd.ts';
import { startSampleCompanion } from '../demo/sample-vms.ts';
import type { GlobalOptions } from './main.ts';
import { describeError, type Io } from './output.ts';
import { guestsLine, runningGuests } from './running-guests.ts';
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
    if (code === LEASE_LOST) {
      io.out(`lost the lead of ${g.vault}; standing by again`);
      continue;
    }
    // Everything is closed: a timer left behind below (a race's losing timeout, as the QEMU
    // driver's 60 s power-off wait was) must not keep the process alive for another minute.
    setTimeout(() => process.exit(code), EXIT_AFTER_CLOSE_MS).unref();
    return code;
  }
}

const LEASE_LOST = -1;
/** How long the first Ctrl-C waits for the pass in progress (and the close) before exiting anyway. */
const STOP_GRACE_MS = 5000;
const EXIT_AFTER_CLOSE_MS = 1000;
/** Exit code of a process ended by SIGINT (128 + 2), as shells report it. */
const EXIT_SIGNALLED = 130;

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
  const tellGuests = () => {
    const line = guestsLine(runningGuests(loaded.state, g.stateDir));
    if (line) io.err(line);
  };
  // Installed before the session opens; until it is open (agents starting, or a follower standing
  // by for the lease) there is nothing to finish, so a signal exits at once, as a kill would.
  let opened = false;
  let stopping: ReturnType<typeof setTimeout> | undefined;
  const exitNow = (why: string) => {
    stopBars();
    io.err(why);
    tellGuests();
    process.exit(EXIT_SIGNALLED);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (!opened) return exitNow(`${signal}: exiting before the loop started`);
    if (stopping) return exitNow(`${signal} again: exiting at once; journaled work resumes on the next drsite run`);
    stop.abort();
    stopBars();
    io.err(`${signal}: stopping after the pass in progress (at most ${STOP_GRACE_MS / 1000}s; Ctrl-C again to exit at once)`);
    // Cutting a pass short is what a kill does, and every step is journaled for exactly that: the
    // next run resumes or rolls back what this one left open. Waiting longer buys nothing.
    stopping = setTimeout(() => exitNow(`the pass in progress did not end within ${STOP_GRACE_MS / 1000}s; exiting without it: its journaled steps resume on the next drsite run`), STOP_GRACE_MS);
    stopping.unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const unlisten = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    clearTimeout(stopping);
  };
  let session: Awaited<ReturnType<typeof openSession>>;
  try {
    session = await openSession({ desired: loaded.state, vaultPath: g.vault!, stateDir: g.stateDir, report: say,
      command: `${LOOP_COMMAND} --poll ${flags.poll}`, waitLockMs: elected && g.waitLock === undefined ? Infinity : waitLockMs(g),
      ...(elected && { leaseTtlMs: duration(flags.leaderTtl, '--leader-ttl') }),
      onLeaseLost: () => {
        lost = elected;
        stop.abort();
      },
      ...(flags.samples && { companion: (sites) => startSampleCompanion(paths, sites, say) }) });
  } catch (e) {
    unlisten();
    throw e;
  }
  opened = true;
  if (elected) say(`leading ${g.vault} (pid ${process.pid})`);
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
        if (tty && r.converged && flags.until !== 'converged' && !stop.signal.aborted) {
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
    served?.server.close();
    await session.close();
    unlisten();
    if (!lost) tellGuests();
  }
}

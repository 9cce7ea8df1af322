// How a run is measured: wall time, CPU of this process plus any helper process, peak RSS sampled
// while the run is in flight; and a child tool run under GNU time, whose rusage covers its children.
import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Sample } from './types.ts';

export interface Spread {
  readonly min: number;
  readonly median: number;
  readonly max: number;
}

export function spread(values: readonly number[]): Spread {
  if (values.length === 0) return { min: NaN, median: NaN, max: NaN };
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { min: s[0], median, max: s[s.length - 1] };
}

/** What a helper process (e.g. the replica peer) reports about itself. */
export interface ProcessUsage {
  readonly cpuMs: number;
  readonly maxRssBytes: number;
}

export interface OwnRun<T> {
  readonly value: T;
  readonly sample: Sample;
}

/**
 * Times `fn` in this process. `helperCpuMs` (called after fn) adds CPU spent by helper processes
 * during the run; the peak RSS is the larger of this process (sampled every 20 ms) and `helperRss`.
 */
export async function measureOwn<T>(
  fn: () => Promise<T>,
  opts: {
    helper?: () => Promise<ProcessUsage>;
    /** Called just before the clock starts (after the helper's first usage report): reset counters here. */
    onStart?: () => void;
    /** Read as soon as `fn` resolves. */
    wireBytes?: () => number;
    extra?: (v: T) => Record<string, number>;
  } = {},
): Promise<OwnRun<T>> {
  const before = opts.helper ? await opts.helper() : undefined;
  opts.onStart?.();
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let value: T;
  try {
    value = await fn();
  } finally {
    clearInterval(timer);
  }
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const wireBytes = opts.wireBytes?.();
  peak = Math.max(peak, process.memoryUsage.rss());
  let cpuMs = (cpu.user + cpu.system) / 1000;
  if (opts.helper && before) {
    const after = await opts.helper();
    cpuMs += after.cpuMs - before.cpuMs;
    peak = Math.max(peak, after.maxRssBytes);
  }
  return {
    value,
    sample: {
      wallMs,
      cpuMs,
      peakRssBytes: peak,
      ...(wireBytes !== undefined && { wireBytes }),
      ...(opts.extra && { extra: opts.extra(value) }),
    },
  };
}

export interface ToolRun {
  readonly sample: Sample;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command under /usr/bin/time (GNU): CPU and max RSS come from wait4's rusage, which
 * includes every descendant the command waited for (rsync's server side, a shell pipeline).
 */
export async function runTool(argv: readonly string[], opts: { cwd?: string; wireBytes?: (stdout: string) => number } = {}): Promise<ToolRun> {
  const out = join(tmpdir(), `drsite-bench-time-${randomBytes(6).toString('hex')}`);
  const t0 = performance.now();
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%U %S %M', '-o', out, ...argv], { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let so = '';
    let se = '';
    child.stdout.on('data', (d: Buffer) => (so += d));
    child.stderr.on('data', (d: Buffer) => (se += d));
    child.on('error', reject);
    child.on('close', (c) => resolve({ code: c, stdout: so, stderr: se }));
  });
  const wallMs = performance.now() - t0;
  const timing = (await readFile(out, 'utf8').catch(() => '')).trim().split('\n').pop() ?? '';
  await rm(out, { force: true });
  if (code !== 0) throw new Error(`${argv.join(' ')} exited with ${code}: ${stderr.trim().slice(-2000)}`);
  const [user, sys, maxKb] = timing.split(/\s+/).map(Number);
  if (![user, sys, maxKb].every(Number.isFinite)) throw new Error(`cannot parse /usr/bin/time output ${JSON.stringify(timing)}`);
  return {
    stdout,
    stderr,
    sample: {
      wallMs,
      cpuMs: (user + sys) * 1000,
      peakRssBytes: maxKb * 1024,
      ...(opts.wireBytes && { wireBytes: opts.wireBytes(stdout) }),
    },
  };
}

// A recovery plan's script action, journaled on disk so a reconciler killed while it runs neither
// loses nor repeats it: the script runs in its own process group with stdout/stderr in files (no
// pipe ties it to this process), and a wrapper shell writes its exit code to `exit` when it ends.
// After a restart: an `exit` file means it completed (exactly once: its result is taken, it is not
// run again); a live pid means it still runs (we wait for it); neither means it was killed before
// completing, and only then is it run again (at least once for a script killed mid-way).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { systemClock, type Clock } from '../model/clock.ts';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ScriptResult {
  exitCode: number | null;
  timedOut: boolean;
  /** The last lines of stdout and stderr, for the job's error and output. */
  stdoutTail: string;
  stderrTail: string;
  /** Found completed in the journal after a restart instead of being run now. */
  resumed?: boolean;
}

export interface ScriptSpec {
  path: string;
  args: readonly string[];
  timeoutMs: number;
  env: Record<string, string>;
  cwd: string;
}

// The wrapper: $0 is the exit-code file, "$@" the script and its arguments.
const WRAPPER = 'x="$0"; rc=0; "$@" || rc=$?; printf %s "$rc" > "$x.tmp" && mv "$x.tmp" "$x"; exit $rc';

function tail(path: string, bytes = 2048): string {
  try {
    const t = readFileSync(path, 'utf8');
    return t.length > bytes ? t.slice(-bytes) : t;
  } catch {
    return '';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function completed(dir: string): ScriptResult | undefined {
  const exit = join(dir, 'exit');
  if (!existsSync(exit)) return undefined;
  return { exitCode: Number(readFileSync(exit, 'utf8').trim()), timedOut: false, stdoutTail: tail(join(dir, 'out')), stderrTail: tail(join(dir, 'err')) };
}

/**
 * What the journal in `dir` says about an earlier run: its result if it completed (waiting for it
 * when it is still running), or undefined when it never completed.
 */
export async function resumeScript(dir: string, timeoutMs: number, clock: Clock = systemClock): Promise<ScriptResult | undefined> {
  const done = completed(dir);
  if (done) return { ...done, resumed: true };
  let pid: number | undefined;
  try {
    pid = Number(readFileSync(join(dir, 'pid'), 'utf8').trim());
  } catch {
    return undefined;
  }
  const deadline = clock.now() + timeoutMs;
  while (pid && alive(pid)) {
    if (clock.now() > deadline) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // already gone
      }
      return { exitCode: null, timedOut: true, stdoutTail: tail(join(dir, 'out')), stderrTail: tail(join(dir, 'err')), resumed: true };
    }
    await sleep(100);
    const now = completed(dir);
    if (now) return { ...now, resumed: true };
  }
  const last = completed(dir);
  return last && { ...last, resumed: true };
}

/** Runs the script now, journaling into `dir` (created; must not hold an earlier run). */
export async function runScript(dir: string, spec: ScriptSpec): Promise<ScriptResult> {
  mkdirSync(dir, { recursive: true });
  const out = openSync(join(dir, 'out'), 'w');
  const err = openSync(join(dir, 'err'), 'w');
  let child;
  try {
    child = spawn('/bin/sh', ['-c', WRAPPER, join(dir, 'exit'), spec.path, ...spec.args], {
      cwd: spec.cwd,
      env: { ...process.env, ...spec.env },
      stdio: ['ignore', out, err],
      detached: true,
    });
  } finally {
    closeSync(out);
    closeSync(err);
  }
  if (child.pid !== undefined) writeFileSync(join(dir, 'pid'), `${child.pid}\n`);
  let timedOut = false;
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }, spec.timeoutMs);
    child.once('error', () => {
      clearTimeout(timer);
      resolve(127);
    });
    child.once('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  const stdoutTail = tail(join(dir, 'out'));
  const stderrTail = tail(join(dir, 'err'));
  if (timedOut) return { exitCode: null, timedOut, stdoutTail, stderrTail };
  return { exitCode: completed(dir)?.exitCode ?? code, timedOut, stdoutTail, stderrTail };
}

// Waiting for a server's UNIX socket. The socket file appearing says little: a server binds (the
// file appears) before it listens, and a daemon that died leaves its file behind; either way a
// connect in that window is refused. What a test waits for is a connection that succeeds.
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Whether something accepts connections on the UNIX socket `path` now. */
export function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Resolves once `path` accepts a connection; throws after `timeoutMs`, or as soon as `proc` (the
 * server, when the test started it) has exited.
 */
export async function untilListening(path: string, opts: { timeoutMs?: number; proc?: ChildProcess; what?: string } = {}): Promise<void> {
  const until = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    if (await listening(path)) return;
    if (opts.proc && opts.proc.exitCode !== null) throw new Error(`${opts.what ?? 'the server'} exited (${opts.proc.exitCode}) before listening on ${path}`);
    if (Date.now() >= until) throw new Error(`${opts.what ?? 'nothing'} listening on ${path} within ${opts.timeoutMs ?? 10_000} ms`);
    await sleep(25);
  }
}

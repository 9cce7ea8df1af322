// The QMP client against a real QEMU (`-machine none`: no guest, just the monitor), plus one
// silent unix server for the timeout, since a real QEMU always answers.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient, QmpError } from '../../../../src/agent/hypervisor/qemu/qmp.ts';
import { tempDir } from '../../../nbd/helpers.ts';
import { waitForFile } from './guest.ts';

let dir: { path: string; remove(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir('qmp');
});
afterAll(async () => {
  await dir.remove();
});

async function startQemu(sock: string): Promise<ChildProcess> {
  const child = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  await waitForFile(sock, 10_000);
  return child;
}

describe('QmpClient', () => {
  it('negotiates, runs commands, reports command errors and events, and sees QEMU quit', async () => {
    const sock = join(dir.path, 'a.qmp');
    const qemu = await startQemu(sock);
    const qmp = await QmpClient.connect(sock);
    try {
      expect(qmp.version).toMatch(/^\d+\.\d+\.\d+$/);
      expect(await qmp.execute('query-status')).toMatchObject({ status: 'running' });

      const err = await qmp.execute('no-such-command').catch((e: unknown) => e);
      expect(QmpError.is(err) && err.kind).toBe('command');
      expect((err as QmpError).qmpClass).toBe('CommandNotFound');

      const stopped = qmp.waitForEvent('STOP', { timeoutMs: 5000 });
      await qmp.execute('stop');
      expect((await stopped).event).toBe('STOP');
      expect(await qmp.execute('query-status')).toMatchObject({ status: 'paused' });
      const resumed = qmp.waitForEvent('RESUME', { timeoutMs: 5000 });
      await qmp.execute('cont');
      await resumed;

      const events: string[] = [];
      qmp.onEvent((e) => events.push(e.event));
      const exited = once(qemu, 'exit');
      await qmp.execute('quit');
      const reason = await qmp.closed;
      await exited;
      expect(reason.kind).toBe('closed');
      expect(events).toContain('SHUTDOWN');
      expect(qmp.isClosed).toBe(true);
      const after = await qmp.execute('query-status').catch((e: unknown) => e);
      expect((after as QmpError).kind).toBe('closed');
    } finally {
      qmp.close();
      qemu.kill('SIGKILL');
    }
  });

  it('rejects pending commands when QEMU is killed', async () => {
    const sock = join(dir.path, 'b.qmp');
    const qemu = await startQemu(sock);
    const qmp = await QmpClient.connect(sock);
    const shutdown = qmp.waitForEvent('SHUTDOWN', { timeoutMs: 30_000 }).catch((e: unknown) => e);
    qemu.kill('SIGKILL');
    const reason = await qmp.closed;
    expect(reason.message).toContain('closed by QEMU');
    const e = (await shutdown) as QmpError;
    expect(e.kind).toBe('closed');
  });

  it('names the socket when nothing listens, and times out a silent peer', async () => {
    const missing = join(dir.path, 'missing.qmp');
    const e = (await QmpClient.connect(missing).catch((x: unknown) => x)) as QmpError;
    expect(e.kind).toBe('closed');
    expect(e.message).toContain(missing);

    // A peer that greets and then never answers: a real QEMU always replies, so this is a stub.
    const silent = join(dir.path, 'silent.qmp');
    const server = net.createServer((s) => s.write('{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\r\n'));
    await new Promise<void>((r) => server.listen(silent, r));
    try {
      const t = (await QmpClient.connect(silent, { timeoutMs: 300 }).catch((x: unknown) => x)) as QmpError;
      expect(t.kind).toBe('timeout');
      expect(t.message).toContain('qmp_capabilities');
    } finally {
      server.close();
    }
  });
});

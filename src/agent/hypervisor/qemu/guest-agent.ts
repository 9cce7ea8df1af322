// A client for qemu-guest-agent (QGA) on a guest's virtio-serial channel, as QEMU exposes it on a
// unix socket, and the Quiescer that freezes a guest's filesystems around a cut with it. QGA
// speaks QMP-style JSON without a greeting; a channel may hold a stale half reply from an earlier
// client, so every session starts with `guest-sync-delimited`: the guest answers with a 0xFF byte
// and then the id, and everything before the 0xFF is dropped.
import { randomInt } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { TerminalError } from '../../../model/errors.ts';
import type { Quiescer } from '../../../core/replication/ports.ts';

interface Waiter {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

export class GuestAgentClient {
  readonly #socket: Socket;
  readonly #vm: string;
  #buffer = '';
  #synced = false;
  #waiter: Waiter | undefined;
  #closed: Error | undefined;

  private constructor(socket: Socket, vm: string) {
    this.#socket = socket;
    this.#vm = vm;
    socket.on('data', (chunk: Buffer) => this.#data(chunk));
    socket.on('error', (e) => this.#fail(new TerminalError('invalid-state', `VM "${vm}": guest agent channel: ${e.message}`)));
    socket.on('close', () => this.#fail(new TerminalError('invalid-state', `VM "${vm}": guest agent channel closed`)));
  }

  /** Connects and synchronises; rejects within `timeoutMs` when no guest agent answers. */
  static async connect(path: string, vm: string, timeoutMs: number): Promise<GuestAgentClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = createConnection(path);
      s.once('connect', () => resolve(s));
      s.once('error', (e) => reject(new TerminalError('invalid-state', `VM "${vm}": no guest agent channel (${e.message}); is the guest running?`)));
    });
    const c = new GuestAgentClient(socket, vm);
    try {
      const id = randomInt(1, 2 ** 31);
      const got = await c.execute<number>('guest-sync-delimited', { id }, timeoutMs);
      if (got !== id) throw new TerminalError('invalid-state', `VM "${vm}": guest agent answered sync ${id} with ${String(got)}`);
      return c;
    } catch (e) {
      c.close();
      throw e;
    }
  }

  execute<T>(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (this.#waiter) return Promise.reject(new Error('one guest agent command at a time'));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new TerminalError('invalid-state', `VM "${this.#vm}": the guest agent did not answer ${command} within ${timeoutMs} ms (is qemu-guest-agent running in the guest?)`));
      }, timeoutMs);
      this.#waiter = {
        resolve: (v) => (clearTimeout(timer), resolve(v as T)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.#socket.write(`${JSON.stringify({ execute: command, ...(args && { arguments: args }) })}\n`);
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #data(chunk: Buffer): void {
    let text = chunk.toString('latin1');
    if (!this.#synced) {
      const at = text.indexOf('\xff');
      if (at < 0) return; // before the sync's delimiter: a stale reply, dropped
      this.#synced = true;
      text = text.slice(at + 1);
    }
    this.#buffer += text;
    for (let nl = this.#buffer.indexOf('\n'); nl >= 0; nl = this.#buffer.indexOf('\n')) {
      const line = this.#buffer.slice(0, nl).trim();
      this.#buffer = this.#buffer.slice(nl + 1);
      if (!line) continue;
      let msg: { return?: unknown; error?: { class?: string; desc?: string } };
      try {
        msg = JSON.parse(Buffer.from(line, 'latin1').toString('utf8')) as typeof msg;
      } catch {
        continue;
      }
      const w = this.#waiter;
      this.#waiter = undefined;
      if (!w) continue;
      if (msg.error) w.reject(new TerminalError('invalid-state', `VM "${this.#vm}": guest agent: ${msg.error.desc ?? msg.error.class ?? 'error'}`));
      else w.resolve(msg.return);
    }
  }

  #fail(e: Error): void {
    this.#closed ??= e;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(e);
  }
}

/**
 * Freezes a guest's filesystems through its guest agent (`guest-fsfreeze-freeze`) and thaws them
 * (`guest-fsfreeze-thaw`, also after a failed freeze: the guest may have frozen some of them).
 */
export function guestAgentQuiescer(socketPath: () => string, vm: string): Quiescer {
  let session: GuestAgentClient | undefined;
  let answered = false;
  return {
    async freeze(timeoutMs) {
      answered = false;
      session = await GuestAgentClient.connect(socketPath(), vm, timeoutMs);
      await session.execute<number>('guest-fsfreeze-freeze', undefined, timeoutMs);
      answered = true;
    },
    async thaw(timeoutMs) {
      let c = session;
      session = undefined;
      if (!c) return; // never reached the guest agent: nothing was frozen
      try {
        // A freeze that timed out may still answer: a new session's sync drops that late reply.
        if (!answered) {
          c.close();
          c = await GuestAgentClient.connect(socketPath(), vm, timeoutMs);
        }
        await c.execute<number>('guest-fsfreeze-thaw', undefined, timeoutMs);
      } finally {
        c.close();
      }
    },
  };
}

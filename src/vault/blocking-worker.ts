// A worker thread called synchronously: the caller posts a request and sleeps on a shared word
// (Atomics.wait) until the worker has posted its answer, which it then takes off the port with
// receiveMessageOnPort. The vault's API is synchronous (a transaction is a synchronous function,
// so nothing else can interleave with it); this is how it reaches a network store without
// giving that up. The worker runs its own event loop, so the store's client (gRPC, timers,
// retries) keeps working while the caller sleeps.
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { RetryableError, TerminalError } from '../model/errors.ts';

/** What the worker posts back for request `id`. */
export type Reply = { readonly id: number; readonly ok: true; readonly value: unknown } | { readonly id: number; readonly ok: false; readonly error: WireError };

/** An error as it crosses the thread boundary: typed drsite errors keep their class and code. */
export interface WireError {
  readonly message: string;
  readonly kind?: 'terminal' | 'retryable';
  readonly code?: string;
}

export interface Request {
  readonly id: number;
  readonly op: string;
  readonly args: unknown;
}

/** Handed to the worker in workerData: the port to answer on and the word to wake the caller with. */
export interface WorkerChannel {
  readonly port: MessagePort;
  readonly wake: SharedArrayBuffer;
}

export class BlockingWorker {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly wake = new Int32Array(new SharedArrayBuffer(4));
  private readonly name: string;
  private nextId = 1;
  private dead: Error | undefined;

  constructor(url: URL, workerData: Record<string, unknown>, name: string) {
    this.name = name;
    const { port1, port2 } = new MessageChannel();
    const channel: WorkerChannel = { port: port2, wake: this.wake.buffer as SharedArrayBuffer };
    this.worker = new Worker(url, { workerData: { ...workerData, channel }, transferList: [port2] });
    this.worker.on('error', (e) => (this.dead = e));
    this.worker.on('exit', (code) => (this.dead ??= new Error(`worker exited with code ${code}`)));
    // Neither the worker nor its port may keep the process alive: closing the vault is enough.
    this.worker.unref();
    port1.unref();
    this.port = port1;
  }

  /** Runs `op` in the worker and returns its answer; RetryableError('network') after timeoutMs. */
  call<T>(op: string, args: unknown, timeoutMs: number): T {
    this.checkAlive();
    const id = this.nextId++;
    Atomics.store(this.wake, 0, 0);
    this.worker.postMessage({ id, op, args } satisfies Request);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Cleared before the port is drained: an answer posted after the drain sets it again.
      Atomics.store(this.wake, 0, 0);
      for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
        const reply = m.message as Reply;
        if (reply.id !== id) continue; // the late answer to a call that timed out
        if (reply.ok) return reply.value as T;
        throw fromWire(reply.error, this.name);
      }
      this.checkAlive();
      const left = deadline - Date.now();
      if (left <= 0) throw new RetryableError('network', `${this.name}: no answer to ${op} within ${Math.round(timeoutMs / 1000)}s`);
      Atomics.wait(this.wake, 0, 0, Math.min(left, 1000));
    }
  }

  private checkAlive(): void {
    if (this.dead) throw new TerminalError('invalid-state', `${this.name}: its worker stopped (${this.dead.message})`);
  }

  /** Stops the worker without waiting for it. */
  terminate(): void {
    this.port.close();
    void this.worker.terminate();
  }
}

export function toWire(e: unknown): WireError {
  const message = e instanceof Error ? e.message : String(e);
  if (TerminalError.is(e)) return { message, kind: 'terminal', code: e.code };
  if (RetryableError.is(e)) return { message, kind: 'retryable', code: e.code };
  return { message };
}

/** The worker's error, its message prefixed with what was called (`vault etcd://...`). */
function fromWire(e: WireError, name: string): Error {
  const message = `${name}: ${e.message}`;
  if (e.kind === 'terminal') return new TerminalError(e.code as never, message);
  if (e.kind === 'retryable') return new RetryableError(e.code as never, message);
  return new Error(message);
}

/** The worker's side: answers each request with handler's result (or error) and wakes the caller. */
export function serveBlockingCalls(parent: MessagePort, channel: WorkerChannel, handler: (op: string, args: unknown) => Promise<unknown>): void {
  const wake = new Int32Array(channel.wake);
  const answer = (reply: Reply) => {
    channel.port.postMessage(reply);
    Atomics.store(wake, 0, 1);
    Atomics.notify(wake, 0);
  };
  parent.on('message', (req: Request) => {
    handler(req.op, req.args).then(
      (value) => answer({ id: req.id, ok: true, value }),
      (e: unknown) => answer({ id: req.id, ok: false, error: toWire(e) }),
    );
  });
}

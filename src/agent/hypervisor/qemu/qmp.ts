// A client for QEMU's machine protocol (QMP) on a unix socket: the greeting and capabilities
// negotiation, commands matched to their replies by id, each with a timeout, asynchronous events,
// and detection of the socket closing (QEMU quit, crashed or was killed).
import net from 'node:net';

/** An asynchronous QMP event (`SHUTDOWN`, `STOP`, `RESUME`, `BLOCK_JOB_COMPLETED`, ...). */
export interface QmpEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
  /** When QEMU emitted it, in milliseconds since the epoch. */
  readonly at: number;
}

export type QmpErrorKind =
  /** QEMU answered the command with an error (`class` and `desc` from QEMU). */
  | 'command'
  /** No reply or event within the timeout. */
  | 'timeout'
  /** The socket closed or could not be opened. */
  | 'closed'
  /** QEMU sent something that is not QMP. */
  | 'protocol';

const QMP_ERROR = Symbol.for('drsite.QmpError');

export class QmpError extends Error {
  readonly kind: QmpErrorKind;
  /** QEMU's error class for `command` errors (`GenericError`, `CommandNotFound`, `DeviceNotFound`, ...). */
  readonly qmpClass: string | undefined;
  constructor(kind: QmpErrorKind, message: string, options?: { qmpClass?: string; cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.name = 'QmpError';
    this.kind = kind;
    this.qmpClass = options?.qmpClass;
    Object.defineProperty(this, QMP_ERROR, { value: true });
  }
  static is(e: unknown): e is QmpError {
    return typeof e === 'object' && e !== null && QMP_ERROR in e;
  }
}

export interface QmpConnectOptions {
  /** How long the connection, greeting and capabilities negotiation may take. @default 5000 */
  readonly timeoutMs?: number;
  /** Default timeout of each command. @default 10000 */
  readonly commandTimeoutMs?: number;
}

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

type Listener = (event: QmpEvent) => void;

export class QmpClient {
  readonly socketPath: string;
  /** QEMU's version from the greeting, e.g. `7.2.22`. */
  readonly version: string;
  /** Resolves once the socket is closed, with the reason (never rejects). */
  readonly closed: Promise<QmpError>;
  readonly #socket: net.Socket;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<Listener>();
  readonly #commandTimeoutMs: number;
  #nextId = 1;
  #closeReason: QmpError | undefined;
  #resolveClosed!: (e: QmpError) => void;

  private constructor(socketPath: string, socket: net.Socket, version: string, commandTimeoutMs: number) {
    this.socketPath = socketPath;
    this.#socket = socket;
    this.version = version;
    this.#commandTimeoutMs = commandTimeoutMs;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** Connects, reads the greeting and leaves negotiation mode; fails with a `closed`/`timeout`/`protocol` QmpError. */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const socket = net.createConnection(socketPath);
    const lines = new LineReader();
    const greeting = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => fail(new QmpError('timeout', `no QMP greeting on ${socketPath} within ${timeoutMs} ms`)), timeoutMs);
      const fail = (e: QmpError): void => {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.destroy();
        reject(e);
      };
      const onData = (chunk: Buffer): void => {
        const line = lines.push(chunk)[0];
        if (line === undefined) return;
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('error', onError);
        socket.off('close', onClose);
        try {
          resolve(JSON.parse(line) as Record<string, unknown>);
        } catch {
          fail(new QmpError('protocol', `${socketPath} sent a greeting that is not JSON: ${line.slice(0, 200)}`));
        }
      };
      const onError = (e: Error): void => fail(new QmpError('closed', `cannot connect to QMP socket ${socketPath}: ${e.message}`, { cause: e }));
      const onClose = (): void => fail(new QmpError('closed', `QMP socket ${socketPath} closed before the greeting`));
      socket.on('data', onData);
      socket.once('error', onError);
      socket.once('close', onClose);
    });
    const qmp = greeting.QMP as { version?: { qemu?: { major: number; minor: number; micro: number } } } | undefined;
    if (!qmp) {
      socket.destroy();
      throw new QmpError('protocol', `${socketPath} is not a QMP socket (greeting ${JSON.stringify(greeting).slice(0, 200)})`);
    }
    const v = qmp.version?.qemu;
    const client = new QmpClient(socketPath, socket, v ? `${v.major}.${v.minor}.${v.micro}` : 'unknown', opts.commandTimeoutMs ?? 10_000);
    client.#attach(lines);
    try {
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  get isClosed(): boolean {
    return this.#closeReason !== undefined;
  }

  /** Runs a command; resolves with its `return` value, rejects with a QmpError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.#closeReason) return Promise.reject(new QmpError('closed', `cannot run ${command}: ${this.#closeReason.message}`));
    const id = this.#nextId++;
    const timeoutMs = opts.timeoutMs ?? this.#commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new QmpError('timeout', `QMP command ${command} got no reply within ${timeoutMs} ms on ${this.socketPath}`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.#socket.write(`${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`);
    });
  }

  /** Calls `listener` with every event from now on; returns the function that unsubscribes it. */
  onEvent(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Resolves with the next event named `name` (and accepted by `filter`); rejects on timeout or close. */
  waitForEvent(name: string, opts: { timeoutMs: number; filter?: (e: QmpEvent) => boolean }): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        off();
      };
      const off = this.onEvent((e) => {
        if (e.event !== name || (opts.filter && !opts.filter(e))) return;
        done();
        resolve(e);
      });
      const timer = setTimeout(() => {
        off();
        reject(new QmpError('timeout', `no ${name} event within ${opts.timeoutMs} ms on ${this.socketPath}`));
      }, opts.timeoutMs);
      void this.closed.then((reason) => {
        done();
        reject(new QmpError('closed', `no ${name} event: ${reason.message}`));
      });
    });
  }

  /** Closes the connection (QEMU keeps running); pending commands reject with a `closed` error. */
  close(): void {
    this.#shut(new QmpError('closed', `QMP connection to ${this.socketPath} closed by the client`));
    this.#socket.destroy();
  }

  #attach(lines: LineReader): void {
    this.#socket.on('data', (chunk: Buffer) => {
      for (const line of lines.push(chunk)) this.#receive(line);
    });
    this.#socket.on('error', () => {
      // The close handler reports it; an error without a listener would crash the process.
    });
    this.#socket.on('close', () => this.#shut(new QmpError('closed', `QMP socket ${this.socketPath} closed by QEMU`)));
  }

  #receive(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.#shut(new QmpError('protocol', `${this.socketPath} sent a line that is not JSON: ${line.slice(0, 200)}`));
      this.#socket.destroy();
      return;
    }
    if (typeof msg.event === 'string') {
      const ts = msg.timestamp as { seconds?: number; microseconds?: number } | undefined;
      const event: QmpEvent = {
        event: msg.event,
        data: (msg.data as Record<string, unknown> | undefined) ?? {},
        at: ts?.seconds !== undefined ? ts.seconds * 1000 + Math.floor((ts.microseconds ?? 0) / 1000) : Date.now(),
      };
      for (const l of [...this.#listeners]) l(event);
      return;
    }
    const id = msg.id;
    const pending = typeof id === 'number' ? this.#pending.get(id) : undefined;
    // A reply without a known id belongs to a command that already timed out.
    if (!pending) return;
    this.#pending.delete(id as number);
    clearTimeout(pending.timer);
    if ('return' in msg) pending.resolve(msg.return);
    else {
      const err = (msg.error ?? {}) as { class?: string; desc?: string };
      pending.reject(new QmpError('command', `QMP ${pending.command} failed: ${err.desc ?? 'unknown error'}`, { qmpClass: err.class }));
    }
  }

  #shut(reason: QmpError): void {
    if (this.#closeReason) return;
    this.#closeReason = reason;
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(new QmpError('closed', `QMP ${p.command} got no reply: ${reason.message}`));
    }
    this.#pending.clear();
    this.#resolveClosed(reason);
  }
}

/** Splits a byte stream into lines; QMP sends one JSON object per line (CRLF-terminated). */
class LineReader {
  #buf = '';
  push(chunk: Buffer): string[] {
    this.#buf += chunk.toString('utf8');
    const parts = this.#buf.split('\n');
    this.#buf = parts.pop() ?? '';
    return parts.map((p) => p.trim()).filter((p) => p.length > 0);
  }
}

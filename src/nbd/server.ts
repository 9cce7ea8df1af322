// Serves BlockDevices as NBD exports on a unix socket, so QEMU, qemu-io, qemu-nbd and the Linux
// nbd driver write through whatever the device wraps (the change tracker, in the agent).

import { chmod, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { BlockDevice } from '../model/block-device.ts';
import { TerminalError } from '../model/errors.ts';
import { CMD, CMD_FLAG, encodeSimpleReply, FrameReader, MAX_REQUEST_BYTES, NBD_ERRNO, REQUEST_HEADER_BYTES, REQUEST_MAGIC, send } from './protocol.ts';
import { negotiate, ProtocolViolation, type Chosen, type Settings } from './server-negotiation.ts';

/** Where exports come from: a live map (read at each connection) or a lookup function (then LIST is empty). */
export type NbdExports = ReadonlyMap<string, BlockDevice> | ((name: string) => BlockDevice | undefined);

export interface NbdServerOptions {
  /**
   * Largest READ or WRITE payload accepted; larger ones get EINVAL (a WRITE's payload is skipped).
   * @default 32 MiB
   */
  readonly maxRequestBytes?: number;
  /**
   * Alignment every request's offset and length must have (advertised as the minimum block size
   * to clients that ask, e.g. QEMU, which then aligns by itself); misaligned requests get EINVAL.
   * @default 1
   */
  readonly minBlockSize?: number;
  /** @default 4096 */
  readonly preferredBlockSize?: number;
  /** Refuse writes with EPERM and advertise the export read-only. @default false */
  readonly readOnly?: boolean;
  /** Called with every device error and protocol violation, for logs; the client gets an errno either way. */
  readonly onError?: (error: unknown, where: string) => void;
  /** Permissions of the socket file (the export is as reachable as this allows). @default 0o600 */
  readonly socketMode?: number;
}

export class NbdServer {
  readonly socketPath: string;
  private readonly server: net.Server;
  private readonly live = new Map<net.Socket, Promise<void>>();
  private closing: Promise<void> | null = null;

  private settings!: Settings;

  private constructor(socketPath: string, server: net.Server) {
    this.socketPath = socketPath;
    this.server = server;
  }

  /**
   * Makes the exports read-only (writes refused with EPERM, new clients told so) or writable again.
   * Going read-only also drops every open connection and resolves once no device call is in
   * progress: a write accepted before it is on the device when this returns, none comes after.
   */
  async setReadOnly(readOnly: boolean): Promise<void> {
    this.settings.readOnly = readOnly;
    if (!readOnly) return;
    const open = [...this.live.entries()];
    for (const [socket] of open) socket.destroy();
    await Promise.all(open.map(([, done]) => done.catch(() => undefined)));
  }

  /**
   * Listens on `socketPath`. A socket file left by a process that died is replaced; one that a
   * live server still answers on is not (TerminalError 'invalid-state').
   */
  static async listen(socketPath: string, exports: NbdExports, opts: NbdServerOptions = {}): Promise<NbdServer> {
    const settings: Settings = {
      maxRequestBytes: opts.maxRequestBytes ?? MAX_REQUEST_BYTES,
      minBlockSize: opts.minBlockSize ?? 1,
      preferredBlockSize: opts.preferredBlockSize ?? 4096,
      readOnly: opts.readOnly ?? false,
      onError: opts.onError ?? (() => {}),
    };
    await removeStaleSocket(socketPath);
    const server = net.createServer();
    const self = new NbdServer(socketPath, server);
    self.settings = settings;
    server.on('connection', (socket) => {
      if (self.closing) return socket.destroy();
      const done = serveConnection(socket, exports, settings).finally(() => self.live.delete(socket));
      self.live.set(socket, done);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(socketPath, opts.socketMode ?? 0o600);
    return self;
  }

  /** Connections currently open. */
  get connections(): number {
    return this.live.size;
  }

  /**
   * Stops accepting, drops every connection and removes the socket file. Resolves once no device
   * call is in progress any more, so the caller may close the devices right after.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
      for (const socket of this.live.keys()) socket.destroy();
      await Promise.all([...this.live.values(), stopped]);
      await unlink(this.socketPath).catch(() => {});
    })();
    return this.closing;
  }
}

async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (!st) return;
  if (!st.isSocket()) {
    throw new TerminalError('invalid-argument', `NBD socket path ${path} exists and is not a socket`);
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new TerminalError('invalid-state', `an NBD server is already listening on ${path}`);
  await unlink(path);
}

async function serveConnection(socket: net.Socket, exports: NbdExports, s: Settings): Promise<void> {
  socket.on('error', () => {}); // the reader sees the close; nothing else to do with the error
  const reader = new FrameReader(socket, 'to the NBD client');
  try {
    const chosen = await negotiate(socket, reader, exports, s);
    if (chosen) await transmit(socket, reader, chosen, s);
  } catch (e) {
    if (e instanceof ProtocolViolation) s.onError(e, 'nbd protocol');
    // Otherwise the client went away: an ordinary end of a connection.
  } finally {
    socket.destroy();
  }
}

/**
 * The transmission phase. Requests run one at a time in arrival order, so a write is never
 * reordered with a later read or flush; pipelined requests wait in the reader's buffer.
 */
async function transmit(socket: net.Socket, r: FrameReader, x: Chosen, s: Settings): Promise<void> {
  for (;;) {
    const head = await r.read(REQUEST_HEADER_BYTES);
    if (head.readUInt32BE(0) !== REQUEST_MAGIC) throw new ProtocolViolation('NBD request without request magic');
    const flags = head.readUInt16BE(4);
    const type = head.readUInt16BE(6);
    const handle = Buffer.from(head.subarray(8, 16));
    const offset = Number(head.readBigUInt64BE(16));
    const length = head.readUInt32BE(24);

    if (type === CMD.DISC) return;

    let payload: Buffer | null = null;
    if (type === CMD.WRITE) {
      if (length > s.maxRequestBytes) {
        // Step over the payload so the stream stays in frame, then refuse.
        await r.skip(length);
      } else {
        payload = await r.read(length);
      }
    }
    const where = `export "${x.name}" ${commandName(type)} at ${offset}+${length}`;
    const errno = validate(type, offset, length, x.size, s);
    if (errno !== 0) {
      await send(socket, encodeSimpleReply(errno, handle));
      continue;
    }
    try {
      const data = await execute(x.device, type, flags, offset, length, payload);
      if (data) {
        if (data.length !== length) throw new TerminalError('invalid-state', `device returned ${data.length} bytes for ${where}`);
        await send(socket, encodeSimpleReply(0, handle), data);
      } else {
        await send(socket, encodeSimpleReply(0, handle));
      }
    } catch (e) {
      if (socket.destroyed) throw e;
      s.onError(e, where);
      await send(socket, encodeSimpleReply(errnoFor(e), handle));
    }
  }
}

function validate(type: number, offset: number, length: number, size: number, s: Settings): number {
  const known = [CMD.READ, CMD.WRITE, CMD.FLUSH, CMD.TRIM, CMD.WRITE_ZEROES] as number[];
  if (!known.includes(type)) return NBD_ERRNO.EINVAL;
  if (type === CMD.FLUSH) return 0;
  if (s.readOnly && type !== CMD.READ) return NBD_ERRNO.EPERM;
  if ((type === CMD.READ || type === CMD.WRITE) && length > s.maxRequestBytes) return NBD_ERRNO.EINVAL;
  if (offset % s.minBlockSize !== 0 || length % s.minBlockSize !== 0) return NBD_ERRNO.EINVAL;
  // Out of range is EINVAL for writes too (the spec suggests ENOSPC there): ENOSPC must keep
  // meaning "the backing store is full", which the engine treats as recoverable and retries.
  if (offset > size || length > size - offset) return NBD_ERRNO.EINVAL;
  return 0;
}

async function execute(
  device: BlockDevice,
  type: number,
  flags: number,
  offset: number,
  length: number,
  payload: Buffer | null,
): Promise<Buffer | null> {
  switch (type) {
    case CMD.READ:
      return length === 0 ? Buffer.alloc(0) : device.read(offset, length);
    case CMD.WRITE:
      if (length > 0) await device.write(offset, payload!);
      break;
    case CMD.TRIM:
    // A trimmed range of a replicated disk must read back the same on both sides, so TRIM is
    // not a hint here: it zeroes, and the tracker records the zeroes.
    case CMD.WRITE_ZEROES:
      if (length > 0) await device.writeZeroes(offset, length);
      break;
    case CMD.FLUSH:
      await device.flush();
      return null;
  }
  if (flags & CMD_FLAG.FUA) await device.flush();
  return null;
}

/** Maps a device failure to the errno the client sees. */
function errnoFor(e: unknown): number {
  const code = (e as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
    case 'low-disk':
      return NBD_ERRNO.ENOSPC;
    case 'ENOMEM':
    case 'low-memory':
      return NBD_ERRNO.ENOMEM;
    case 'EINVAL':
    case 'invalid-argument':
      return NBD_ERRNO.EINVAL;
    case 'EROFS':
    case 'EPERM':
    case 'EACCES':
      return NBD_ERRNO.EPERM;
    default:
      return NBD_ERRNO.EIO;
  }
}

function commandName(type: number): string {
  for (const [name, value] of Object.entries(CMD)) if (value === type) return name;
  return `command ${type}`;
}

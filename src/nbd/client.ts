// A minimal NBD client over a unix socket (fixed newstyle, NBD_OPT_GO) for our tests, the workload
// generator, the benchmark and QEMU's exports. It is itself a BlockDevice. Asked for metadata
// contexts, it negotiates structured replies and reads block status (dirty bitmaps, allocation).

import net from 'node:net';
import type { BlockDevice } from '../model/block-device.ts';
import { RetryableError, TerminalError } from '../model/errors.ts';
import { decodeBlockStatus, decodeErrorChunk, REPLY_FLAG_DONE, REPLY_TYPE, STRUCTURED_REPLY_MAGIC, type StatusExtent } from './block-status.ts';
import { go, openConnection, readOptionReply, selectContexts, type NbdExportInfo } from './client-negotiation.ts';
import {
  CMD,
  CMD_FLAG,
  connectionClosed,
  encodeOption,
  encodeRequest,
  errnoName,
  FrameReader,
  MAX_REQUEST_BYTES,
  NBD_ERRNO,
  OPT,
  REP,
  SIMPLE_REPLY_BYTES,
  SIMPLE_REPLY_MAGIC,
} from './protocol.ts';

/** Zeroing commands carry no payload, so only their 32-bit length field limits them. */
const MAX_ZEROING = 0x80000000;

/** Splits a range into requests of at most `max` bytes; a zero-length range is one empty request. */
function spans(offset: number, length: number, max: number): { offset: number; length: number }[] {
  const out = [{ offset, length: Math.min(length, max) }];
  for (let at = max; at < length; at += max) out.push({ offset: offset + at, length: Math.min(max, length - at) });
  return out;
}

const ERRNO = Symbol.for('drsite.nbdErrno');

/** The NBD error value behind an error a request rejected with, if the server sent one. */
export function nbdErrnoOf(e: unknown): number | undefined {
  return typeof e === 'object' && e !== null && ERRNO in e ? (e as { [ERRNO]: number })[ERRNO] : undefined;
}

/** Turns an error reply into a typed error: a full disk or memory pressure retries, the rest do not. */
function replyError(errno: number, what: string): Error {
  const message = `NBD ${what} failed: ${errnoName(errno)}`;
  let e: Error;
  switch (errno) {
    case NBD_ERRNO.ENOSPC:
      e = new RetryableError('low-disk', message);
      break;
    case NBD_ERRNO.ENOMEM:
      e = new RetryableError('low-memory', message);
      break;
    case NBD_ERRNO.ESHUTDOWN:
      e = new RetryableError('network', message);
      break;
    case NBD_ERRNO.EPERM:
      e = new TerminalError('authorization', message);
      break;
    case NBD_ERRNO.EINVAL:
    case NBD_ERRNO.EOVERFLOW:
    case NBD_ERRNO.ENOTSUP:
      e = new TerminalError('invalid-argument', message);
      break;
    default:
      e = new TerminalError('invalid-state', message);
  }
  Object.defineProperty(e, ERRNO, { value: errno });
  return e;
}

interface Pending {
  /** Names the request in an error message; built only when one is needed. */
  readonly what: () => string;
  readonly type: number;
  readonly offset: number;
  readonly readLength: number;
  readonly resolve: (value: Buffer | Map<number, StatusExtent[]>) => void;
  readonly reject: (e: unknown) => void;
  /** A structured READ fills this as chunks arrive (holes stay zero). */
  data?: Buffer;
  /** A structured BLOCK_STATUS collects one chunk per context id. */
  status?: Map<number, StatusExtent[]>;
  /** The first error chunk: the request fails once its last chunk arrived. */
  error?: Error;
}

export interface ConnectOptions {
  /**
   * Metadata contexts to select (`base:allocation`, `qemu:dirty-bitmap:NAME`): the client then
   * negotiates structured replies, and a context the server does not offer is an error.
   */
  readonly metaContexts?: readonly string[];
}

export interface WriteOptions {
  /** Force unit access: the reply comes once this write is durable. @default false */
  readonly fua?: boolean;
}

export class NbdClient implements BlockDevice {
  readonly exportName: string;
  readonly size: number;
  readonly info: NbdExportInfo;
  /** Selected metadata contexts by the id the server gave them. */
  readonly contexts: ReadonlyMap<number, string>;
  private readonly socket: net.Socket;
  private readonly reader: FrameReader;
  private readonly pending = new Map<number, Pending>();
  private readonly maxRequest: number;
  private nextHandle = 1;
  private idle: (() => void)[] = [];
  private failure: Error | null = null;
  private closing: Promise<void> | null = null;

  private constructor(socket: net.Socket, reader: FrameReader, exportName: string, info: NbdExportInfo, contexts: ReadonlyMap<number, string>) {
    this.socket = socket;
    this.contexts = contexts;
    this.reader = reader;
    this.exportName = exportName;
    this.info = info;
    this.size = info.size;
    this.maxRequest = Math.min(MAX_REQUEST_BYTES, info.blockSize?.maximum ?? MAX_REQUEST_BYTES);
    void this.receive();
  }

  /**
   * Connects and negotiates `exportName` with NBD_OPT_GO (NBD_OPT_EXPORT_NAME if the server is
   * older). An unknown export rejects with TerminalError('not-found'); an unreachable socket
   * with RetryableError('network').
   */
  static async connect(socketPath: string, exportName: string, opts: ConnectOptions = {}): Promise<NbdClient> {
    const { socket, reader, noZeroes } = await openConnection(socketPath);
    try {
      const contexts = opts.metaContexts?.length ? await selectContexts(socket, reader, exportName, opts.metaContexts) : new Map<number, string>();
      const info = await go(socket, reader, exportName, noZeroes);
      return new NbdClient(socket, reader, exportName, info, contexts);
    } catch (e) {
      socket.destroy();
      throw e;
    }
  }

  /** The export names a server lists (NBD_OPT_LIST). */
  static async list(socketPath: string): Promise<string[]> {
    const { socket, reader } = await openConnection(socketPath);
    try {
      socket.write(encodeOption(OPT.LIST));
      const names: string[] = [];
      for (;;) {
        const { type, data } = await readOptionReply(reader, OPT.LIST);
        if (type === REP.ACK) break;
        if (type !== REP.SERVER) throw new TerminalError('invalid-state', `NBD_OPT_LIST refused: ${data.toString('utf8')}`);
        names.push(data.toString('utf8', 4, 4 + data.readUInt32BE(0)));
      }
      socket.write(encodeOption(OPT.ABORT));
      return names;
    } finally {
      socket.end();
    }
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  read(offset: number, length: number): Promise<Buffer> {
    const parts = spans(offset, length, this.maxRequest).map((p) => this.request(CMD.READ, 0, p.offset, p.length, p.length));
    return parts.length === 1 ? parts[0] : Promise.all(parts).then((bufs) => Buffer.concat(bufs, length));
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    const flags = opts.fua ? CMD_FLAG.FUA : 0;
    await Promise.all(
      spans(offset, data.length, this.maxRequest).map((p) =>
        this.request(CMD.WRITE, flags, p.offset, p.length, 0, data.subarray(p.offset - offset, p.offset - offset + p.length)),
      ),
    );
  }

  async writeZeroes(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    const flags = opts.fua ? CMD_FLAG.FUA : 0;
    await Promise.all(spans(offset, length, MAX_ZEROING).map((p) => this.request(CMD.WRITE_ZEROES, flags, p.offset, p.length, 0)));
  }

  /** NBD_CMD_TRIM (our server zeroes the range). */
  async trim(offset: number, length: number): Promise<void> {
    await Promise.all(spans(offset, length, MAX_ZEROING).map((p) => this.request(CMD.TRIM, 0, p.offset, p.length, 0)));
  }

  async flush(): Promise<void> {
    await this.request(CMD.FLUSH, 0, 0, 0, 0);
  }

  /**
   * NBD_CMD_BLOCK_STATUS: the extents of every selected context from `offset`, by context name.
   * The server may answer for less than `length` (or, for the last extent, more): callers that
   * need the whole range ask again from where the shortest answer ends (`blockStatusRange`).
   */
  async blockStatus(offset: number, length: number): Promise<Map<string, StatusExtent[]>> {
    if (this.contexts.size === 0) throw new TerminalError('invalid-state', `NBD export "${this.exportName}": block status needs a metadata context selected at connect`);
    const p = await this.request<Map<number, StatusExtent[]>>(CMD.BLOCK_STATUS, 0, offset, Math.min(length, 0xffffffff - 0xfff), 0);
    const out = new Map<string, StatusExtent[]>();
    for (const [id, extents] of p) out.set(this.contexts.get(id)!, extents);
    return out;
  }

  /** Block status of one context over the whole of [offset, offset+length), asking as often as needed. */
  async blockStatusRange(context: string, offset: number, length: number): Promise<StatusExtent[]> {
    const out: StatusExtent[] = [];
    const end = Math.min(offset + length, this.size);
    for (let at = offset; at < end; ) {
      const extents = (await this.blockStatus(at, end - at)).get(context);
      if (!extents?.length) throw new TerminalError('invalid-state', `NBD export "${this.exportName}" sent no extents for context ${context}`);
      for (const e of extents) {
        if (e.offset >= end) break;
        out.push({ offset: e.offset, length: Math.min(e.length, end - e.offset), flags: e.flags });
      }
      at = extents.at(-1)!.offset + extents.at(-1)!.length;
    }
    return out;
  }

  /** Waits for every request in flight, then disconnects (NBD_CMD_DISC). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.pending.size > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
      if (!this.failure) {
        this.failure = new TerminalError('invalid-state', `NBD client for export "${this.exportName}" is closed`);
        if (!this.socket.destroyed) {
          const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
          this.socket.end(encodeRequest(CMD.DISC, 0, 0, 0, 0));
          await closed;
        }
      }
      this.socket.destroy();
    })();
    return this.closing;
  }

  private request<T = Buffer>(type: number, flags: number, offset: number, length: number, readLength: number, data?: Buffer): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const handle = this.nextHandle;
    this.nextHandle = (this.nextHandle + 1) >>> 0 || 1;
    const what = () => `${Object.keys(CMD).find((k) => CMD[k as keyof typeof CMD] === type)} of export "${this.exportName}" at ${offset}+${length}`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(handle, { what, type, offset, readLength, resolve: resolve as Pending['resolve'], reject });
      // Written in call order on one socket: the server runs them in that order.
      this.socket.write(encodeRequest(type, flags, handle, offset, length));
      if (data && data.length > 0) this.socket.write(data);
    });
  }

  private async receive(): Promise<void> {
    try {
      for (;;) {
        const head = await this.reader.read(SIMPLE_REPLY_BYTES);
        if (head.readUInt32BE(0) === STRUCTURED_REPLY_MAGIC && this.contexts.size > 0) {
          await this.receiveChunk(head);
          continue;
        }
        if (head.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
          throw new TerminalError('invalid-state', `NBD reply with bad magic 0x${head.readUInt32BE(0).toString(16)}`);
        }
        const errno = head.readUInt32BE(4);
        const handle = head.readUInt32BE(12);
        const p = this.pending.get(handle);
        if (!p) throw new TerminalError('invalid-state', `NBD reply for unknown handle ${handle}`);
        this.pending.delete(handle);
        if (errno !== 0) p.reject(replyError(errno, p.what()));
        else p.resolve(p.readLength > 0 ? await this.reader.read(p.readLength) : Buffer.alloc(0));
        if (this.pending.size === 0) this.settle();
      }
    } catch (e) {
      this.failure ??= RetryableError.is(e) || TerminalError.is(e) ? e : connectionClosed(`to export "${this.exportName}"`, e);
      const failure = this.failure;
      for (const p of this.pending.values()) p.reject(failure);
      this.pending.clear();
      this.settle();
      this.socket.destroy();
    }
  }

  /** One structured reply chunk (its first 16 header bytes are read); the request settles on the DONE chunk. */
  private async receiveChunk(head: Buffer): Promise<void> {
    const flags = head.readUInt16BE(4);
    const type = head.readUInt16BE(6);
    const handle = head.readUInt32BE(12);
    const length = (await this.reader.read(4)).readUInt32BE(0);
    const p = this.pending.get(handle);
    if (!p) throw new TerminalError('invalid-state', `NBD structured reply for unknown handle ${handle}`);
    const payload = await this.reader.read(length);
    if (type === REPLY_TYPE.OFFSET_DATA && p.type === CMD.READ) {
      const at = Number(payload.readBigUInt64BE(0)) - p.offset;
      if (at < 0 || at + length - 8 > p.readLength) throw new TerminalError('invalid-state', `NBD read data chunk outside ${p.what()}`);
      p.data ??= Buffer.alloc(p.readLength);
      payload.copy(p.data, at, 8);
    } else if (type === REPLY_TYPE.OFFSET_HOLE && p.type === CMD.READ) {
      p.data ??= Buffer.alloc(p.readLength); // zero-filled: a hole needs nothing written
    } else if (type === REPLY_TYPE.BLOCK_STATUS && p.type === CMD.BLOCK_STATUS) {
      const { contextId, extents } = decodeBlockStatus(payload, p.offset);
      if (!this.contexts.has(contextId)) throw new TerminalError('invalid-state', `NBD block status for unknown context id ${contextId}`);
      (p.status ??= new Map()).set(contextId, extents);
    } else if (type & 0x8000) {
      const { errno, message } = decodeErrorChunk(payload);
      p.error ??= replyError(errno, `${p.what()}${message ? ` (${message})` : ''}`);
    } else if (type !== REPLY_TYPE.NONE) {
      throw new TerminalError('invalid-state', `NBD structured reply of unexpected type ${type} to ${p.what()}`);
    }
    if (!(flags & REPLY_FLAG_DONE)) return;
    this.pending.delete(handle);
    if (p.error) p.reject(p.error);
    else if (p.type === CMD.BLOCK_STATUS) {
      if (!p.status || p.status.size !== this.contexts.size) {
        p.reject(new TerminalError('invalid-state', `NBD ${p.what()}: not one block status chunk per selected context`));
      } else p.resolve(p.status);
    } else p.resolve(p.data ?? Buffer.alloc(p.readLength));
    if (this.pending.size === 0) this.settle();
  }

  private settle(): void {
    for (const resolve of this.idle.splice(0)) resolve();
  }
}

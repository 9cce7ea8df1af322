// The NBD wire protocol (NetworkBlockDevice doc/proto.md, fixed newstyle, simple replies): its
// constants, and the buffered frame reader the server and the client both parse the stream with.

import type { Duplex } from 'node:stream';
import { RetryableError } from '../model/errors.ts';

/** 'NBDMAGIC', the first 8 bytes a newstyle server sends. */
export const NBD_MAGIC = Buffer.from('NBDMAGIC', 'latin1');
/** 'IHAVEOPT': follows NBDMAGIC in the greeting, and starts every option request. */
export const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');
/** Starts every option reply (a 64-bit number; its high 32 bits are these). */
export const OPTION_REPLY_MAGIC_HI = 0x0003e889;
export const OPTION_REPLY_MAGIC_LO = 0x045565a9;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;

/** Request header: magic u32, flags u16, type u16, handle u64, offset u64, length u32. */
export const REQUEST_HEADER_BYTES = 28;
/** Simple reply header: magic u32, error u32, handle u64. */
export const SIMPLE_REPLY_BYTES = 16;
/** Option reply header: magic u64, option u32, reply type u32, length u32. */
export const OPTION_REPLY_HEADER_BYTES = 20;
/** Option request header after IHAVEOPT: option u32, length u32. */
export const OPTION_HEADER_BYTES = 16;

export const HANDSHAKE_FLAG = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;
export const CLIENT_FLAG = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const ERR = 0x80000000;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

/** Information types carried by NBD_REP_INFO in reply to NBD_OPT_INFO / NBD_OPT_GO. */
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Transmission flags: what the export supports, sent with its size. */
export const TX_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

export const CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

/** Error values of the transmission phase (Linux errno numbers, as the protocol fixes them). */
export const NBD_ERRNO = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** The name of an NBD error value, for messages. */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(NBD_ERRNO)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** Largest READ or WRITE payload either side handles in one request (the brief's 32 MiB). */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/** An option request (IHAVEOPT, option, length, data) as a client sends it. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(OPTION_HEADER_BYTES);
  IHAVEOPT.copy(head, 0);
  head.writeUInt32BE(option, 8);
  head.writeUInt32BE(data.length, 12);
  return Buffer.concat([head, data]);
}

/** An option reply as a server sends it. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(OPTION_REPLY_HEADER_BYTES);
  head.writeUInt32BE(OPTION_REPLY_MAGIC_HI, 0);
  head.writeUInt32BE(OPTION_REPLY_MAGIC_LO, 4);
  head.writeUInt32BE(option, 8);
  head.writeUInt32BE(type >>> 0, 12);
  head.writeUInt32BE(data.length, 16);
  return Buffer.concat([head, data]);
}

/** A transmission request header. `handle` fills the low 32 bits of the 64-bit handle. */
export function encodeRequest(type: number, flags: number, handle: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(REQUEST_HEADER_BYTES);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeUInt32BE(0, 8);
  b.writeUInt32BE(handle >>> 0, 12);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

/** A simple reply header; `handle` is the request's 8 raw handle bytes, echoed unchanged. */
export function encodeSimpleReply(error: number, handle: Buffer): Buffer {
  const b = Buffer.alloc(SIMPLE_REPLY_BYTES);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  handle.copy(b, 8, 0, 8);
  return b;
}

/** The stream ended (or failed) before a whole frame arrived. */
export function connectionClosed(where: string, cause?: unknown): RetryableError {
  return new RetryableError('network', `NBD connection ${where} closed`, { cause });
}

/**
 * Reads exact-length frames from a stream that delivers arbitrary fragments. One read may be
 * outstanding at a time (both sides parse their stream strictly in order). Bytes that arrive
 * while nobody waits are buffered up to `highWater`, then the socket is paused, so a client
 * that pipelines faster than the device writes is slowed by TCP, not by our memory.
 */
export class FrameReader {
  private readonly stream: Duplex;
  private readonly highWater: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: unknown) => void } | null = null;
  private failure: RetryableError | null = null;
  private paused = false;

  constructor(stream: Duplex, where: string, highWater = 2 * MAX_REQUEST_BYTES) {
    this.stream = stream;
    this.highWater = highWater;
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    const end = (cause?: unknown) => this.fail(connectionClosed(where, cause));
    stream.on('end', () => end());
    stream.on('close', () => end());
    stream.on('error', (e) => end(e));
  }

  /** Resolves with exactly `n` bytes; rejects with a RetryableError('network') if the stream ends first. */
  read(n: number): Promise<Buffer> {
    if (this.waiter) throw new Error('FrameReader: a read is already outstanding');
    if (this.buffered >= n) return Promise.resolve(this.take(n));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.setPaused(false);
    });
  }

  /** Discards exactly `n` bytes (a payload we refuse but must step over to stay in frame). */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, MAX_REQUEST_BYTES);
      await this.read(k);
      n -= k;
    }
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const w = this.waiter;
    if (w && this.buffered >= w.n) {
      this.waiter = null;
      w.resolve(this.take(w.n));
    } else if (!w && this.buffered >= this.highWater) {
      this.setPaused(true);
    }
  }

  private fail(e: RetryableError): void {
    if (this.failure) return;
    this.failure = e;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(e);
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    this.buffered -= n;
    if (this.buffered < this.highWater) this.setPaused(false);
    const first = this.chunks[0];
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0];
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }

  private setPaused(paused: boolean): void {
    if (paused === this.paused) return;
    this.paused = paused;
    if (paused) this.stream.pause();
    else this.stream.resume();
  }
}

/** Writes buffers in order, resolving once the socket accepted them (waiting for 'drain' if full). */
export function send(stream: Duplex, ...bufs: Buffer[]): Promise<void> {
  if (stream.destroyed || stream.writableEnded) return Promise.reject(connectionClosed('write'));
  let ok = true;
  if (bufs.length > 1) stream.cork();
  for (const b of bufs) ok = stream.write(b);
  if (bufs.length > 1) stream.uncork();
  if (ok) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (e?: unknown) => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      if (e) reject(e);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(connectionClosed('write'));
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}

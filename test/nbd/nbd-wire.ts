// A raw NBD client for robustness tests: it speaks the fixed newstyle handshake and simple replies
// byte by byte (numbers from NetworkBlockDevice doc/proto.md, not from src/nbd/protocol.ts, so a
// wrong constant there cannot hide behind the same constant here), and can send anything at any
// point: bad magic, truncated frames, half a WRITE payload.
import net from 'node:net';

export const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
export const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, GO: 7 } as const;
export const REP = { ACK: 1, SERVER: 2, INFO: 3, ERR_UNSUP: 2 ** 31 + 1, ERR_INVALID: 2 ** 31 + 3, ERR_UNKNOWN: 2 ** 31 + 6 } as const;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6 } as const;
export const ERRNO = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75 } as const;
/** Client flags: NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES. */
export const CLIENT_FLAGS = 0b11;

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface SimpleReply {
  error: number;
  handle: bigint;
  data: Buffer;
}

/** The stream closed (or stayed silent past the wait) before the bytes asked for arrived. */
export class WireClosed extends Error {}

export class RawNbd {
  readonly socket: net.Socket;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #ended = false;
  #wake: (() => void) | null = null;
  readonly closed: Promise<void>;
  #handle = 1n;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => {
      this.#chunks.push(c);
      this.#buffered += c.length;
      this.#wake?.();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#ended = true;
        this.#wake?.();
        resolve();
      }),
    );
  }

  static connect(path: string): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const s = net.connect(path);
      s.once('connect', () => resolve(new RawNbd(s)));
      s.once('error', reject);
    });
  }

  /** Connects, reads the greeting and sends the client flags: ready for options. */
  static async negotiating(path: string): Promise<RawNbd> {
    const c = await RawNbd.connect(path);
    await c.greeting();
    c.send(u32(CLIENT_FLAGS));
    return c;
  }

  /** Negotiates `name` with NBD_OPT_GO: ready for transmission. */
  static async transmitting(path: string, name: string): Promise<{ nbd: RawNbd; size: number }> {
    const nbd = await RawNbd.negotiating(path);
    const r = await nbd.go(name);
    if (!('size' in r)) throw new Error(`NBD_OPT_GO ${name} refused: ${r.type} ${r.message}`);
    return { nbd, size: r.size };
  }

  send(...bufs: Buffer[]): void {
    for (const b of bufs) this.socket.write(b);
  }

  /** Exactly `n` bytes; WireClosed if the server closes first or sends nothing for `waitMs`. */
  async read(n: number, waitMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + waitMs;
    while (this.#buffered < n) {
      if (this.#ended) throw new WireClosed(`closed with ${this.#buffered} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new WireClosed(`no ${n} bytes within ${waitMs} ms (${this.#buffered} buffered)`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [all.subarray(n)];
    this.#buffered -= n;
    return all.subarray(0, n);
  }

  /** Resolves true when the server closed the connection within `waitMs`, false if it is still open. */
  async closedWithin(waitMs = 5_000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), waitMs)));
    const r = await Promise.race([this.closed.then(() => true), timeout]);
    clearTimeout(timer);
    return r;
  }

  /** The 18-byte greeting: NBDMAGIC, IHAVEOPT, handshake flags (returned). */
  async greeting(): Promise<number> {
    const g = await this.read(18);
    if (!g.subarray(0, 8).equals(NBDMAGIC) || !g.subarray(8, 16).equals(IHAVEOPT)) throw new Error(`bad greeting ${g.toString('hex')}`);
    return g.readUInt16BE(16);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    this.send(IHAVEOPT, u32(option), u32(data.length), data);
  }

  async optionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    const magic = h.readBigUInt64BE(0);
    if (magic !== OPTION_REPLY_MAGIC) throw new Error(`bad option reply magic 0x${magic.toString(16)}`);
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(length) };
  }

  /** NBD_OPT_GO: the export's size and transmission flags, or the error reply that ended it. */
  async go(name: string): Promise<{ size: number; flags: number } | { type: number; message: string }> {
    const n = Buffer.from(name, 'utf8');
    this.sendOption(OPT.GO, Buffer.concat([u32(n.length), n, u16(0)]));
    let info: { size: number; flags: number } | undefined;
    for (;;) {
      const r = await this.optionReply();
      if (r.option !== OPT.GO) throw new Error(`reply to option ${r.option}, expected GO`);
      if (r.type === REP.INFO && r.data.readUInt16BE(0) === 0) {
        info = { size: Number(r.data.readBigUInt64BE(2)), flags: r.data.readUInt16BE(10) };
      } else if (r.type === REP.ACK) {
        if (!info) throw new Error('NBD_REP_ACK without NBD_INFO_EXPORT');
        return info;
      } else if (r.type >= 2 ** 31) {
        return { type: r.type, message: r.data.toString('utf8') };
      }
    }
  }

  /** NBD_OPT_LIST: the export names. */
  async list(): Promise<string[]> {
    this.sendOption(OPT.LIST);
    const names: string[] = [];
    for (;;) {
      const r = await this.optionReply();
      if (r.type === REP.ACK) return names;
      if (r.type !== REP.SERVER) throw new Error(`NBD_OPT_LIST reply type ${r.type}`);
      names.push(r.data.toString('utf8', 4, 4 + r.data.readUInt32BE(0)));
    }
  }

  /** A request header (and payload, if given); returns its handle. */
  sendRequest(type: number, offset: number | bigint, length: number, payload?: Buffer, flags = 0): bigint {
    const h = Buffer.alloc(28);
    const handle = this.#handle++;
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length >>> 0, 24);
    this.send(h);
    if (payload) this.send(payload);
    return handle;
  }

  /** A simple reply; `dataBytes` of payload follow it when it reports success (a READ's data). */
  async reply(dataBytes = 0, waitMs?: number): Promise<SimpleReply> {
    const h = await this.read(16, waitMs);
    const magic = h.readUInt32BE(0);
    if (magic !== SIMPLE_REPLY_MAGIC) throw new Error(`bad simple reply magic 0x${magic.toString(16)}`);
    const error = h.readUInt32BE(4);
    const data = error === 0 && dataBytes > 0 ? await this.read(dataBytes, waitMs) : Buffer.alloc(0);
    return { error, handle: h.readBigUInt64BE(8), data };
  }

  /** One request and its reply, checking the handle is echoed. */
  async request(type: number, offset: number | bigint, length: number, payload?: Buffer, flags = 0): Promise<SimpleReply> {
    const handle = this.sendRequest(type, offset, length, payload, flags);
    const r = await this.reply(type === CMD.READ ? length : 0);
    if (r.handle !== handle) throw new Error(`reply for handle ${r.handle}, expected ${handle}`);
    return r;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n, 0);
  return b;
}

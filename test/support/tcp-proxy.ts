// A TCP proxy between a primary agent and its Replica server for network-fault tests: it forwards
// bytes both ways and, when armed, cuts, stalls or corrupts the upload direction at an exact byte
// count, resets new connections during the TLS handshake, and records what clients sent so a raw
// replay can be attempted. It sees only TLS records, so faults land at byte positions, never at
// HTTP message boundaries.
import { createServer, connect, type Server, type Socket } from 'node:net';

/** One proxied connection: the client's socket, the target's, and what went each way. */
export interface ProxiedConnection {
  readonly id: number;
  readonly client: Socket;
  readonly upstream: Socket;
  /** Bytes taken from the client for the target (the upload direction), and from the target for the client. */
  sentUp: number;
  sentDown: number;
  /** Client bytes, when recording was on as it opened (see `record`). */
  readonly recorded?: Buffer[];
  /** One side ended, failed or closed it (or a fault cut it). */
  closed: boolean;
  /** A drop or a flip struck it: later faults leave it alone (and do not count its bytes). */
  struck: boolean;
  /** Forwarding on this connection waits until this time (ms since the epoch). */
  stalledUntil: number;
  /** Where the client's stream stands in its TLS records: header bytes seen of the current one, payload bytes left. */
  readonly framing: { header: number[]; payloadLeft: number };
  /** The client side ended, failed or closed first (it gave up, e.g. on a timeout). */
  closedByClient: boolean;
}

/** Where an armed fault struck: its connection, and the upload-direction bytes taken by then. */
export interface FaultFired {
  readonly connection: ProxiedConnection;
  /** `TcpProxy.bytesUp`, and the connection's `sentUp`, as the fault struck. */
  readonly bytesUp: number;
  readonly connectionBytesUp: number;
}

type Armed = { at: number; readonly fired: (f: FaultFired) => void } & (
  | { readonly kind: 'drop' }
  | { readonly kind: 'stall'; readonly ms: number }
  | { readonly kind: 'flip' }
);

export class TcpProxy {
  readonly port: number;
  readonly #server: Server;
  readonly #target: { host: string; port: number };
  readonly connections: ProxiedConnection[] = [];
  #armed: Armed | undefined;
  #resetsLeft = 0;
  #resetAfter = 0;
  #recording = false;
  /** How many new connections were reset during their handshake. */
  resets = 0;

  private constructor(server: Server, port: number, target: { host: string; port: number }) {
    this.#server = server;
    this.port = port;
    this.#target = target;
  }

  /** Listens on a free loopback port and forwards every connection to `target`. */
  static async start(target: { host?: string; port: number }): Promise<TcpProxy> {
    const t = { host: target.host ?? '127.0.0.1', port: target.port };
    let proxy!: TcpProxy;
    const server = createServer((client) => proxy.#accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy = new TcpProxy(server, (server.address() as { port: number }).port, t);
    return proxy;
  }

  /** `https://127.0.0.1:<port>`: the endpoint to give a primary instead of its replica's. */
  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  /** Bytes forwarded in the upload direction over every connection so far. */
  get bytesUp(): number {
    return this.connections.reduce((n, c) => n + c.sentUp, 0);
  }

  /**
   * Upload-direction bytes taken since fault `f` on every connection but the one it struck: what
   * the client sent again to recover. (The struck connection may go on taking bytes the client
   * had already queued until the target hangs up; those never reach it.)
   */
  sentAfter(f: FaultFired): number {
    return this.bytesUp - f.bytesUp - (f.connection.sentUp - f.connectionBytesUp);
  }

  /**
   * Cuts the connection carrying the upload once `bytes` more bytes went upstream (both sockets
   * destroyed). Every fault counts and strikes only connections no earlier drop or flip struck.
   */
  dropAfter(bytes: number): Promise<FaultFired> {
    return this.#arm((fired) => ({ kind: 'drop', at: this.bytesUp + bytes, fired }));
  }

  /** Stops forwarding (both ways) on the connection carrying the upload for `ms` once `bytes` more went upstream. */
  stallAfter(bytes: number, ms: number): Promise<FaultFired> {
    return this.#arm((fired) => ({ kind: 'stall', at: this.bytesUp + bytes, ms, fired }));
  }

  /**
   * Inverts one byte in the upload direction: the one `bytes` bytes from now, or, when that one
   * is part of a TLS record header, the first record payload byte after it (so the corruption is
   * one TLS must catch by its record MAC, not a garbled length that merely stalls the stream).
   */
  flipAfter(bytes: number): Promise<FaultFired> {
    return this.#arm((fired) => ({ kind: 'flip', at: this.bytesUp + bytes, fired }));
  }

  /** The next `count` new connections are closed after `afterBytes` client bytes (inside the TLS ClientHello). */
  resetHandshakes(count: number, afterBytes = 5): void {
    this.#resetsLeft = count;
    this.#resetAfter = afterBytes;
  }

  /** Records what clients send on connections opened from now on (`ProxiedConnection.recorded`). */
  record(on = true): void {
    this.#recording = on;
  }

  /** Destroys every open connection, as a link going down would. */
  dropAll(): void {
    for (const c of this.connections) if (!c.closed) this.#close(c, false);
  }

  /**
   * Sends `bytes` (a recorded client stream) to the target on a new connection, bypassing the
   * proxy's faults, and resolves with what came back once the target closes (or `timeoutMs`).
   */
  replay(bytes: Buffer, timeoutMs = 5_000): Promise<{ received: Buffer; error?: Error }> {
    return new Promise((resolve) => {
      const parts: Buffer[] = [];
      let error: Error | undefined;
      const s = connect(this.#target.port, this.#target.host, () => s.end(bytes));
      const timer = setTimeout(() => s.destroy(), timeoutMs);
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('error', (e) => (error = e));
      s.on('close', () => {
        clearTimeout(timer);
        resolve({ received: Buffer.concat(parts), ...(error && { error }) });
      });
    });
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #arm(make: (fired: (f: FaultFired) => void) => Armed): Promise<FaultFired> {
    if (this.#armed) throw new Error('a fault is already armed');
    return new Promise<FaultFired>((resolve) => (this.#armed = make(resolve)));
  }

  #accept(client: Socket): void {
    const upstream = connect(this.#target.port, this.#target.host);
    const conn: ProxiedConnection = {
      id: this.connections.length,
      client,
      upstream,
      sentUp: 0,
      sentDown: 0,
      ...(this.#recording && { recorded: [] as Buffer[] }),
      closed: false,
      struck: false,
      stalledUntil: 0,
      framing: { header: [], payloadLeft: 0 },
      closedByClient: false,
    };
    this.connections.push(conn);
    const reset = this.#resetsLeft > 0;
    if (reset) this.#resetsLeft--;
    client.on('error', () => this.#close(conn, true));
    upstream.on('error', () => this.#close(conn, false));
    client.on('close', () => this.#close(conn, true));
    upstream.on('close', () => this.#close(conn, false));
    client.on('end', () => {
      this.#ended(conn, true);
      upstream.end();
    });
    upstream.on('end', () => {
      this.#ended(conn, false);
      client.end();
    });
    upstream.on('data', (d: Buffer) => {
      conn.sentDown += d.length;
      this.#forward(conn, client, upstream, d);
    });
    client.on('data', (d: Buffer) => {
      if (conn.closed) return;
      conn.recorded?.push(Buffer.from(d));
      if (reset) {
        const keep = d.subarray(0, Math.max(0, this.#resetAfter - conn.sentUp));
        conn.sentUp += keep.length;
        if (keep.length) upstream.write(keep);
        if (conn.sentUp >= this.#resetAfter) {
          this.resets++;
          client.resetAndDestroy();
          this.#close(conn, false);
        }
        return;
      }
      this.#upload(conn, d);
    });
  }

  // Client bytes towards the target, through whatever fault is armed.
  #upload(conn: ProxiedConnection, d: Buffer): void {
    const f = this.#armed;
    const start = this.bytesUp;
    const payload = recordPayload(conn.framing, d);
    if (f && conn.struck) {
      // What a client had queued on a connection an earlier fault doomed: not "bytes from now".
      f.at += d.length;
      conn.sentUp += d.length;
      this.#forward(conn, conn.upstream, conn.client, d);
      return;
    }
    let cut = f ? f.at - start : d.length; // bytes of `d` before the fault's position
    if (f?.kind === 'flip' && cut < d.length) cut = firstPayloadFrom(payload, cut) ?? d.length;
    if (!f || cut >= d.length) {
      conn.sentUp += d.length;
      if (f?.kind === 'flip' && f.at < start + d.length) this.#armed = { ...f, at: start + d.length };
      this.#forward(conn, conn.upstream, conn.client, d);
      return;
    }
    this.#armed = undefined;
    // A cut or corrupted connection is doomed; a stalled one may carry on afterwards.
    conn.struck = f.kind !== 'stall';
    switch (f.kind) {
      case 'drop': {
        if (cut > 0) conn.upstream.write(d.subarray(0, cut));
        conn.sentUp += cut;
        // Let the bytes before the cut reach the target, then cut both sides.
        conn.upstream.end(() => this.#close(conn, false));
        conn.client.resetAndDestroy();
        conn.closed = true;
        f.fired({ connection: conn, bytesUp: this.bytesUp, connectionBytesUp: conn.sentUp });
        return;
      }
      case 'flip': {
        const copy = Buffer.from(d);
        copy[cut] ^= 0xff;
        conn.sentUp += copy.length;
        this.#forward(conn, conn.upstream, conn.client, copy);
        f.fired({ connection: conn, bytesUp: this.bytesUp, connectionBytesUp: conn.sentUp });
        return;
      }
      case 'stall': {
        conn.upstream.write(d.subarray(0, cut));
        conn.sentUp += cut;
        conn.stalledUntil = Date.now() + f.ms;
        const rest = Buffer.from(d.subarray(cut));
        f.fired({ connection: conn, bytesUp: this.bytesUp, connectionBytesUp: conn.sentUp });
        conn.sentUp += rest.length;
        this.#forward(conn, conn.upstream, conn.client, rest);
        return;
      }
    }
  }

  // Writes `d` to `to` with back-pressure on `from`, after any stall in force.
  #forward(conn: ProxiedConnection, to: Socket, from: Socket, d: Buffer): void {
    const wait = conn.stalledUntil - Date.now();
    if (wait > 0) {
      from.pause();
      setTimeout(() => {
        if (to.destroyed) return;
        this.#forward(conn, to, from, d);
        from.resume();
      }, wait);
      return;
    }
    if (!to.destroyed && !to.write(d)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  }

  #close(conn: ProxiedConnection, byClient: boolean): void {
    this.#ended(conn, byClient);
    conn.client.destroy();
    conn.upstream.destroy();
  }

  // The first side to end, fail or close decides who closed the connection.
  #ended(conn: ProxiedConnection, byClient: boolean): void {
    if (conn.closed) return;
    conn.closed = true;
    conn.closedByClient = byClient;
  }
}

/** Ranges [start, end) of `d` that are TLS record payload (not 5-byte headers), advancing `framing` past `d`. */
function recordPayload(framing: { header: number[]; payloadLeft: number }, d: Buffer): [number, number][] {
  const out: [number, number][] = [];
  let i = 0;
  while (i < d.length) {
    if (framing.payloadLeft > 0) {
      const n = Math.min(framing.payloadLeft, d.length - i);
      out.push([i, i + n]);
      framing.payloadLeft -= n;
      i += n;
      continue;
    }
    framing.header.push(d[i++]);
    if (framing.header.length === 5) {
      framing.payloadLeft = (framing.header[3] << 8) | framing.header[4];
      framing.header.length = 0;
    }
  }
  return out;
}

/** The first payload index at or after `from`, if any. */
function firstPayloadFrom(ranges: [number, number][], from: number): number | undefined {
  for (const [a, b] of ranges) if (b > from) return Math.max(a, from);
  return undefined;
}

// Starts the replica peer process (bench/peers/replica-peer.ts) and speaks to it: block digests on
// request, sealed logs to receive and apply (whole, or streamed as they are produced), and its own
// CPU and memory figures.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { COMPARE_DIGEST_BYTES, indexesToRuns } from '../../src/core/replication/block-checksums.ts';
import type { BlockDigests, RemoteDigests } from '../../src/core/replication/block-checksums.ts';
import type { RelationshipKeys } from '../../src/core/types.ts';
import { FrameChannel } from './frames.ts';
import type { ProcessUsage } from './measure.ts';

const SCRIPT = fileURLToPath(new URL('../peers/replica-peer.ts', import.meta.url));
/** A streamed log's pieces are gathered into 'log-chunk' messages of this size (the last one shorter). */
const STREAM_MESSAGE_BYTES = 1 << 20;

export interface ReplicaPeerOptions {
  readonly dir: string;
  readonly relationshipId: string;
  readonly diskId: string;
  readonly diskSize: number;
  readonly keys: RelationshipKeys;
  /** Additional recovery points the replica keeps. @default 0 */
  readonly additional?: number;
  /** Encrypts the replica at rest (AES-256-XTS) under this key, as an agent's replicas are. @default plain */
  readonly atRestKey?: Buffer;
}

export class ReplicaPeer {
  readonly channel: FrameChannel;
  readonly #child: ChildProcess;
  readonly #exited: Promise<number | null>;

  private constructor(child: ChildProcess) {
    this.#child = child;
    this.channel = new FrameChannel(child.stdout!, child.stdin!);
    this.#exited = new Promise((r) => child.once('exit', (code) => r(code)));
  }

  static async start(o: ReplicaPeerOptions): Promise<ReplicaPeer> {
    const child = spawn(process.execPath, [SCRIPT, o.dir, o.relationshipId, o.diskId, String(o.diskSize), String(o.additional ?? 0)], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: {
        ...process.env, BENCH_ENC_KEY: o.keys.encryptionKey.toString('hex'), BENCH_MAC_KEY: o.keys.macKey.toString('hex'),
        ...(o.atRestKey && { BENCH_AT_REST_KEY: o.atRestKey.toString('hex') }),
      },
    });
    const peer = new ReplicaPeer(child);
    const ready = await Promise.race([
      peer.channel.receive(),
      peer.#exited.then((c) => Promise.reject(new Error(`replica peer exited (${c}) before it was ready`))),
    ]);
    if (ready.head.op !== 'ready') throw new Error(`replica peer: unexpected first message ${JSON.stringify(ready.head)}`);
    return peer;
  }

  async usage(): Promise<ProcessUsage> {
    const f = await this.channel.call({ op: 'usage' });
    return { cpuMs: Number(f.head.cpuMs), maxRssBytes: Number(f.head.maxRssBytes) };
  }

  /** The engine's RemoteDigests (compare digests) over the pipe: `only` travels as (start, count) runs, digests raw. */
  readonly digests: RemoteDigests = async (blockSize: number, only?: readonly number[]): Promise<BlockDigests> => {
    const f = await this.channel.call({ op: 'digests', blockSize }, only ? encodeRuns(only) : Buffer.alloc(0));
    return { blockSize, size: Number(f.head.size), keyed: true, digestBytes: COMPARE_DIGEST_BYTES, ...(only && { indexes: [...only] }), digests: f.body };
  };

  /** Ships one sealed log; resolves once the replica stored it durably and applied every complete point. */
  async shipAndApply(sequence: number, log: Buffer): Promise<{ applied: number; bytes: number }> {
    const f = await this.channel.call({ op: 'log', sequence }, log);
    return { applied: Number(f.head.applied), bytes: Number(f.head.bytes) };
  }

  /**
   * Streams one sealed log while `produce` makes it: `produce` calls `send` with each piece in
   * order (e.g. as `encode`'s sink). The pieces are copied into messages of STREAM_MESSAGE_BYTES,
   * each sent as it fills ('log-begin', 'log-chunk'..., 'log-end'; a message's send awaits the
   * pipe's drain, so `send` holds the producer back when the replica falls behind). Resolves once
   * the replica stored the log durably and applied every complete point; `logBytes` is the sum of
   * the pieces. When `produce` throws, the replica is told to discard what it got ('log-end' with
   * abort) and the error is rethrown.
   */
  async streamAndApply(
    sequence: number,
    produce: (send: (chunk: Buffer) => Promise<void>) => Promise<void>,
  ): Promise<{ applied: number; bytes: number; logBytes: number }> {
    await this.channel.send({ op: 'log-begin', sequence });
    let msg = Buffer.allocUnsafe(STREAM_MESSAGE_BYTES);
    let fill = 0;
    let logBytes = 0;
    const flush = async () => {
      if (!fill) return;
      const body = fill === msg.length ? msg : msg.subarray(0, fill);
      msg = Buffer.allocUnsafe(STREAM_MESSAGE_BYTES); // the sent one may still sit in the pipe's buffer
      fill = 0;
      await this.channel.send({ op: 'log-chunk' }, body);
    };
    try {
      await produce(async (chunk) => {
        logBytes += chunk.length;
        for (let at = 0; at < chunk.length;) {
          const n = chunk.copy(msg, fill, at);
          fill += n;
          at += n;
          if (fill === msg.length) await flush();
        }
      });
      await flush();
    } catch (e) {
      await this.channel.call({ op: 'log-end', abort: true }).catch(() => undefined);
      throw e;
    }
    const f = await this.channel.call({ op: 'log-end' });
    return { applied: Number(f.head.applied), bytes: Number(f.head.bytes), logBytes };
  }

  async imageSha256(): Promise<string> {
    return String((await this.channel.call({ op: 'sha256' })).head.sha256);
  }

  async viewSha256(sequence: number): Promise<string> {
    return String((await this.channel.call({ op: 'view-sha256', sequence })).head.sha256);
  }

  async stats(): Promise<{ stats: Record<string, number>; points: { sequence: number; time: number }[] }> {
    const f = await this.channel.call({ op: 'stats' });
    return f.head as unknown as { stats: Record<string, number>; points: { sequence: number; time: number }[] };
  }

  async close(): Promise<void> {
    if (this.#child.exitCode === null) {
      await this.channel.call({ op: 'bye' }).catch(() => undefined);
      this.#child.stdin!.end();
    }
    await this.#exited;
  }
}

function encodeRuns(indexes: readonly number[]): Buffer {
  const runs = indexesToRuns(indexes);
  const b = Buffer.alloc(runs.length * 4);
  runs.forEach((v, k) => b.writeUInt32LE(v, k * 4));
  return b;
}

// The replica side of the engine-level benchmarks, as its own process (a replica is another host):
// answers compare-digest requests over its image and receives and applies sealed logs into a
// ReplicaStore, over framed messages on stdin/stdout.
// A sealed log comes whole ('log' {sequence}, the log as body) or streamed: 'log-begin' {sequence},
// then 'log-chunk' messages whose bodies are the log's bytes in order, then 'log-end' (with
// `abort: true` when the sender failed: the partial log is discarded). The chunks go into
// receiveStream as they arrive, so the receive overlaps the sender's encode; only 'log-end' is
// answered, like 'log': once the log is stored durably and every complete point applied.
// Run: node bench/peers/replica-peer.ts <replicaDir> <relationshipId> <diskId> <diskSize> <retentionAdditional>
// Keys come in the environment (BENCH_ENC_KEY, BENCH_MAC_KEY, hex) so they stay off the command line;
// BENCH_AT_REST_KEY (hex), when set, makes the replica encrypted at rest as an agent makes it.
import { createHash } from 'node:crypto';
import { compareChecksums, compareKeys } from '../../src/core/replication/block-checksums.ts';
import { ReplicaStore } from '../../src/core/replica/replica-store.ts';
import { FrameChannel } from '../lib/frames.ts';

const [dir, relationshipId, diskId, sizeArg, additionalArg] = process.argv.slice(2);
const keys = { encryptionKey: Buffer.from(process.env.BENCH_ENC_KEY ?? '', 'hex'), macKey: Buffer.from(process.env.BENCH_MAC_KEY ?? '', 'hex') };
const store = await ReplicaStore.open(dir, keys, {
  relationshipId,
  disks: [{ id: diskId, size: Number(sizeArg) }],
  retention: { additional: Number(additionalArg ?? 0) },
  ...(process.env.BENCH_AT_REST_KEY && { atRestKey: Buffer.from(process.env.BENCH_AT_REST_KEY, 'hex') }),
});

/** SHA-256 of the disk as the image holds it (decrypted when encrypted at rest). */
async function imageSha256(): Promise<string> {
  const image = await store.openImage(diskId);
  try {
    const h = createHash('sha256');
    for (let at = 0; at < image.size; at += 8 << 20) h.update(await image.read(at, Math.min(8 << 20, image.size - at)));
    return h.digest('hex');
  } finally {
    await image.close();
  }
}
const ch = new FrameChannel(process.stdin, process.stdout);
const compare = compareKeys(keys.macKey);

function decodeRuns(body: Buffer): number[] | undefined {
  if (body.length === 0) return undefined;
  const out: number[] = [];
  for (let at = 0; at < body.length; at += 8) {
    const start = body.readUInt32LE(at);
    const count = body.readUInt32LE(at + 4);
    for (let i = 0; i < count; i++) out.push(start + i);
  }
  return out;
}

/**
 * The body of a streamed log: the 'log-chunk' messages' bodies until 'log-end'. `drain` reads
 * whatever of the stream is still on the pipe (after receiveStream failed), so the one reply
 * answers 'log-end'.
 */
function logStream(): { chunks: AsyncGenerator<Buffer>; drain: () => Promise<void> } {
  let ended = false;
  const next = async (): Promise<Buffer | undefined> => {
    const c = await ch.receive();
    if (c.head.op === 'log-chunk') return c.body;
    ended = true;
    if (c.head.op !== 'log-end') throw new Error(`streamed log: unexpected op ${String(c.head.op)} before log-end`);
    if (c.head.abort) throw new Error('streamed log: the sender aborted it');
    return undefined;
  };
  return {
    chunks: (async function* () {
      for (let b = await next(); b; b = await next()) yield b;
    })(),
    async drain() {
      while (!ended) {
        try {
          await next();
        } catch (e) {
          if (!ended) throw e; // the pipe closed
        }
      }
    },
  };
}

async function sendApplied(): Promise<void> {
  const applied = await store.applyPending();
  await ch.send({ op: 'applied', applied: store.applied, points: applied.length, bytes: applied.reduce((n, p) => n + p.bytes, 0) });
}

await ch.send({ op: 'ready', applied: store.applied });
for (;;) {
  let f;
  try {
    f = await ch.receive();
  } catch {
    break; // the bench closed the pipe
  }
  const op = f.head.op;
  try {
    if (op === 'digests') {
      const image = await store.openImage(diskId);
      try {
        const d = await compareChecksums(image, Number(f.head.blockSize), compare, decodeRuns(f.body));
        await ch.send({ op: 'digests', size: d.size, count: d.digests.length / d.digestBytes! }, d.digests);
      } finally {
        await image.close();
      }
    } else if (op === 'log') {
      const body = f.body;
      await store.receiveStream(diskId, Number(f.head.sequence), (async function* () {
        yield body;
      })());
      await sendApplied();
    } else if (op === 'log-begin') {
      const stream = logStream();
      try {
        await store.receiveStream(diskId, Number(f.head.sequence), stream.chunks);
      } finally {
        await stream.drain();
      }
      await sendApplied();
    } else if (op === 'usage') {
      const cpu = process.cpuUsage();
      await ch.send({ op: 'usage', cpuMs: (cpu.user + cpu.system) / 1000, maxRssBytes: process.resourceUsage().maxRSS * 1024 });
    } else if (op === 'stats') {
      await ch.send({ op: 'stats', stats: store.stats(), points: store.points() });
    } else if (op === 'sha256') {
      await ch.send({ op: 'sha256', sha256: await imageSha256() });
    } else if (op === 'view-sha256') {
      const out = `${dir}/view-${Number(f.head.sequence)}.img`;
      const r = await store.exportView(Number(f.head.sequence), diskId, out);
      await ch.send({ op: 'view-sha256', sha256: r.sha256 });
    } else if (op === 'bye') {
      await ch.send({ op: 'bye' });
      break;
    } else {
      await ch.send({ error: `unknown op ${String(op)}` });
    }
  } catch (e) {
    await ch.send({ error: (e as Error).stack ?? String(e) });
  }
}
await store.close();
process.exit(0);

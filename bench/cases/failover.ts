// Case 6, failover latency for a 4 GiB VM: from the operator's API call on the replica host until
// the VM exists and its disk reads back the recovery point's content over the VM's NBD socket.
// Test failover (a `<vm>-Test` VM on an overlay of the latest point) and failover to the latest
// point (cancelled after each run so the next one starts from the same replica).
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { NbdClient } from '../../src/nbd/client.ts';
import { noise } from '../lib/data.ts';
import { AgentPair, POLICY_30S } from '../lib/agents.ts';
import { measureOwn } from '../lib/measure.ts';
import { GiB, MiB, fmtSize } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Goal, Sample, Scenario } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';
import { ROUTES, send } from '../../test/support/agent-client.ts';

const VM = 'bench-fo';
const DISK = 'd0';
const REL = `rel-${VM}`;
const CHUNK = 4 * MiB;

/** Whole-disk SHA-256 through an NBD export (what the VM would read). */
async function nbdSha256(c: NbdClient): Promise<string> {
  const h = createHash('sha256');
  let next = c.read(0, Math.min(CHUNK, c.size));
  for (let at = 0; at < c.size; at += CHUNK) {
    const buf = await next;
    const n = at + CHUNK;
    if (n < c.size) next = c.read(n, Math.min(CHUNK, c.size - n));
    h.update(buf);
  }
  return h.digest('hex');
}

/** SHA-256 of the 1 MiB regions at `offsets` (ascending), read through an NBD export. */
async function regionsSha256(c: NbdClient, offsets: readonly number[]): Promise<string> {
  const h = createHash('sha256');
  for (const at of offsets) h.update(await c.read(at, MiB));
  return h.digest('hex');
}

/** 1 MiB of seeded noise at `count` spread offsets: the VM's data, so the point is not all zeroes. */
async function writeSpread(socket: string, size: number, count: number, seed: number): Promise<number[]> {
  const c = await NbdClient.connect(socket, DISK);
  const offsets: number[] = [];
  try {
    const step = Math.floor(size / count / MiB) * MiB;
    for (let i = 0; i < count; i++) {
      const at = i * step + ((seed * 7 + i * 13) % Math.max(1, step / MiB - 1)) * MiB;
      await c.write(at, noise(seed, i, MiB));
      offsets.push(at);
    }
    await c.flush();
  } finally {
    await c.close();
  }
  return offsets;
}

export const failover: BenchCase = {
  name: 'failover',
  title: '6. Failover latency, 4 GiB VM',
  goal: 'failover to the latest point <= 2 s; test failover <= 1 s',
  async run(ctx: BenchContext): Promise<CaseResult> {
    const size = ctx.quick ? 256 * MiB : 4 * GiB;
    const pair = await AgentPair.start(join(ctx.workDir, 'agents'));
    const scenarios: Scenario[] = [];
    try {
      const a = pair.primary.client;
      const b = pair.replica.client;
      const primarySock = join(pair.primary.dataDir, 'nbd', `${VM}.sock`);
      await send(a, ROUTES.createVm, {}, { name: VM, disks: [{ name: DISK, size }] });
      ctx.log(`writing ${ctx.quick ? 16 : 128} MiB into a ${fmtSize(size)} VM and replicating it`);
      const written = await writeSpread(primarySock, size, ctx.quick ? 16 : 128, 1);
      await send(a, ROUTES.createRelationship, {}, { id: REL, vm: VM, replica: { name: pair.replica.name, endpoint: pair.replica.url }, policy: POLICY_30S });
      let t = performance.now();
      const lap = (what: string) => {
        ctx.log(`${what}: ${((performance.now() - t) / 1000).toFixed(1)} s`);
        t = performance.now();
      };
      await send(a, ROUTES.startReplication, { id: REL }, undefined, { query: { wait: 'true' } });
      lap('initial replication');
      // A delta point on top, so the latest point is not just the initial copy.
      const touched = await writeSpread(primarySock, size, ctx.quick ? 4 : 32, 2);
      const cyc = (await send(a, ROUTES.replicateNow, { id: REL })).json<{ sequence: number; applied: number }>();
      if (cyc.applied !== cyc.sequence) throw new CorrectnessError(`failover: delta point ${cyc.sequence} not applied (replica at ${cyc.applied})`);
      // Suspend the primary side: no scheduled cycle may add a point while the runs compare against this one.
      await send(a, ROUTES.suspend, { id: REL });
      const seq = (await send(b, ROUTES.getRelationship, { id: REL })).json<{ appliedSequence: number }>().appliedSequence;
      if (seq < cyc.sequence) throw new CorrectnessError(`failover: replica at ${seq}, delta point ${cyc.sequence} was applied`);
      lap('delta point');
      const pointSha = (await send(b, ROUTES.pointDigest, { id: REL, seq, disk: DISK })).json<{ sha256: string }>().sha256;
      lap('point sha256');
      const probe = touched[touched.length - 1];
      // Reading 4 GiB through NBD takes about 20 s: the whole disk is checked after the first run
      // of each kind; later runs check the regions the VM wrote against the bytes the first run read.
      const regions = [...new Set([...written, ...touched])].sort((x, y) => x - y);
      let regionsSha: string | undefined;
      const fullChecks = new Set<string>();

      // One timed run: the API call, then connect to the VM's disk and read its first block and a
      // block of the latest delta (what a booting guest does first). Verified afterwards, untimed.
      const once = async (kind: 'test' | 'failover'): Promise<Sample> => {
        const vmName = kind === 'test' ? `${VM}-Test` : VM;
        const sock = join(pair.replica.dataDir, 'nbd', `${vmName}.sock`);
        let apiMs = 0;
        let client: NbdClient | undefined;
        const run = await measureOwn(async () => {
          const t0 = performance.now();
          const r = kind === 'test'
            ? (await send(b, ROUTES.testFailover, { id: REL }, { recoveryPoint: 'latest' })).json<{ testVm: string; recoveryPoint: { sequence: number } }>()
            : (await send(b, ROUTES.failover, { id: REL }, { recoveryPoint: 'latest' })).json<{ vm: string; recoveryPoint: { sequence: number } }>();
          apiMs = performance.now() - t0;
          if (r.recoveryPoint.sequence !== seq) throw new CorrectnessError(`${kind} failover used point ${r.recoveryPoint.sequence}, latest is ${seq}`);
          client = await NbdClient.connect(sock, DISK);
          await client.read(0, 4096);
          await client.read(probe, 4096);
        }, { helper: () => pair.usage(), extra: () => ({ apiMs }) });
        try {
          t = performance.now();
          const regionsGot = await regionsSha256(client!, regions);
          if (!fullChecks.has(kind)) {
            const got = await nbdSha256(client!);
            if (got !== pointSha) throw new CorrectnessError(`${kind} failover: VM disk sha256 ${got} != point ${seq} ${pointSha}`);
            fullChecks.add(kind);
            regionsSha ??= regionsGot;
          }
          if (regionsGot !== regionsSha) throw new CorrectnessError(`${kind} failover: the VM's written regions read ${regionsGot}, the verified run read ${regionsSha}`);
          lap(`${kind} run: check through NBD`);
        } finally {
          await client?.close();
        }
        if (kind === 'test') await send(b, ROUTES.cleanupTestFailover, { id: REL });
        else await send(b, ROUTES.cancel, { id: REL });
        return run.sample;
      };

      for (const [kind, goalS, label] of [['test', 1, 'test failover (<vm>-Test on an overlay of the latest point)'], ['failover', 2, 'failover to the latest point (unplanned; cancelled after each run)']] as const) {
        const samples: Sample[] = [];
        for (let r = 0; r < ctx.runs; r++) samples.push(await once(kind));
        const walls = samples.map((s) => s.wallMs).sort((x, y) => x - y);
        const med = walls[walls.length >> 1];
        const goals: Goal[] = [{ text: `<= ${goalS} s (median)`, measured: `${(med / 1000).toFixed(2)} s (slowest ${(walls.at(-1)! / 1000).toFixed(2)} s)`, met: med <= goalS * 1000 }];
        scenarios.push({
          name: `${fmtSize(size)} VM, ${kind === 'test' ? 'test failover' : 'failover'} to the latest point (${seq})`,
          subjects: [{ name: `drsite ${label}`, ours: true, samples }],
          goals,
          verified: `sha256 of the VM's disk read through its NBD socket = the replica's digest of point ${seq} (first run); the ${regions.length} regions the VM wrote read the same in all ${samples.length}/${ctx.runs} runs`,
        });
      }
    } finally {
      await pair.stop();
    }
    return {
      status: 'ok',
      scenarios,
      notes: [
        'Timed from the operator POST on the replica agent (mutual TLS) until the VM exists and its disk answers over NBD: connect, read the first 4 KiB and a 4 KiB block of the latest delta. apiMs (Other) is the POST alone. Checks follow, untimed: the whole disk\'s sha256 through NBD after the first run of each kind (about 20 s for 4 GiB), the 1 MiB regions the VM wrote after every run.',
        `The VM holds ${ctx.quick ? 16 : 128} MiB of data at spread offsets, replicated initially, plus a delta point of ${ctx.quick ? 4 : 32} MiB. CPU and peak RSS are the two agent processes' and the bench's. No peer.`,
      ],
    };
  },
};

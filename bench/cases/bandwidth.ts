// Case 9, the policy's bandwidth cap: an initial copy of an incompressible disk between two real
// agent processes over loopback mutual TLS with `bandwidth: 4194304`, whose average rate must stay
// at the cap (the token bucket's burst, 1/8 s of traffic, is the only allowed overshoot).
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { sha256File } from '../../src/core/disk/disk.ts';
import { AgentPair, POLICY_30S } from '../lib/agents.ts';
import { noise } from '../lib/data.ts';
import { measureOwn } from '../lib/measure.ts';
import { MiB, fmtRatio, fmtSize } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Goal, Sample } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';
import { ROUTES, send } from '../../test/support/agent-client.ts';

const CAP = 4194304;
const GOAL_MIBPS = 4.4;

async function fillNoise(path: string, size: number, seed: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    for (let at = 0, i = 0; at < size; at += 8 * MiB, i++) {
      const n = Math.min(8 * MiB, size - at);
      await fh.write(noise(seed, i, n), 0, n, at);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export const bandwidth: BenchCase = {
  name: 'bandwidth',
  title: `9. Bandwidth: 64 MiB initial copy with bandwidth ${CAP}`,
  goal: `<= ${GOAL_MIBPS} MiB/s average over the copy's transfer`,
  async run(ctx: BenchContext): Promise<CaseResult> {
    const size = ctx.quick ? 8 * MiB : 64 * MiB;
    const pair = await AgentPair.start(join(ctx.workDir, 'agents'));
    const samples: Sample[] = [];
    try {
      const a = pair.primary.client;
      // One run: at the cap a 64 MiB copy takes 16 s, and its rate is the bucket's doing, not a noisy speed.
      const vm = 'bench-bw';
      const rel = `rel-${vm}`;
      await send(a, ROUTES.createVm, {}, { name: vm, disks: [{ name: 'd0', size }] });
      const image = join(pair.primary.dataDir, 'vms', vm, 'd0.img');
      await fillNoise(image, size, 90);
      const want = await sha256File(image);
      await send(a, ROUTES.createRelationship, {}, {
        id: rel,
        vm,
        replica: { name: pair.replica.name, endpoint: pair.replica.url },
        policy: { ...POLICY_30S, frequency: '15m', bandwidth: CAP },
      });
      // The streamed initial copy ships from its first moment (no outbox log sealed first), so the
      // transfer is the whole call: cut, segments, point 1.
      type View = { state: string; appliedSequence: number; bytesShipped?: number };
      const run = await measureOwn(async () => {
        return (await send(a, ROUTES.startReplication, { id: rel }, undefined, { query: { wait: 'true' } })).json();
      }, { helper: () => pair.usage() });
      const view = (await send(a, ROUTES.getRelationship, { id: rel })).json<View>();
      const got = (await send(pair.replica.client, ROUTES.pointDigest, { id: rel, seq: view.appliedSequence, disk: 'd0' })).json<{ sha256: string }>();
      if (got.sha256 !== want) throw new CorrectnessError(`capped initial copy: replica point ${view.appliedSequence} sha256 ${got.sha256} != primary ${want}`);
      const shipped = view.bytesShipped ?? 0;
      if (shipped < size) throw new CorrectnessError(`capped initial copy shipped ${shipped} bytes, less than the ${size}-byte incompressible disk`);
      const mibps = shipped / MiB / (run.sample.wallMs / 1000);
      samples.push({ ...run.sample, wireBytes: shipped, extra: { 'MiB/s': Number(mibps.toFixed(2)), 'x cap': Number(((mibps * MiB) / CAP).toFixed(3)), 'transfer s': Number((run.sample.wallMs / 1000).toFixed(2)) } });
      await send(a, ROUTES.removeRelationship, { id: rel }).catch(() => undefined);
    } finally {
      await pair.stop();
    }
    const rate = samples[0].extra!['MiB/s'];
    const goals: Goal[] = [{ text: `<= ${GOAL_MIBPS} MiB/s (cap ${CAP / MiB} MiB/s)`, measured: `${rate.toFixed(2)} MiB/s, ${fmtRatio((rate * MiB) / CAP)} the cap`, met: rate <= GOAL_MIBPS }];
    ctx.log(`average ${rate.toFixed(2)} MiB/s over ${fmtSize(size)} at a ${CAP / MiB} MiB/s cap`);
    return {
      status: 'ok',
      scenarios: [{
        name: `${fmtSize(size)} incompressible disk, bandwidth ${CAP} B/s`,
        inputBytes: size,
        subjects: [{ name: 'drsite initial replication, capped (2 agents, mTLS)', ours: true, samples }],
        goals,
        verified: `sha256 of the replica's applied point = primary image; bytes shipped >= disk size (incompressible)`,
      }],
      notes: [
        'Rate (MiB/s) = bytesShipped (sealed segment bytes, before TLS framing) / the whole call (POST /start?wait=true to its answer). The streamed initial copy ships from its first moment, so the call is the transfer plus the cut and the making of point 1; that fixed cost (under a second) pulls a short copy under the cap. (Before the streamed copy this case timed only the upload of a log sealed first.)',
        'The bucket starts full (burst 512 KiB at 4 MiB/s), so a copy of N MiB may run at most 0.5/N above the cap on average: 6% for the quick run\'s 8 MiB, under 1% for 64 MiB. One run per bench: the rate is the cap\'s, and 64 MiB at 4 MiB/s takes 16 s.',
      ],
    };
  },
};

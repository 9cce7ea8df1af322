// Case 13, fleet scale on one host. (a) One agent pair (two real `drsite agent` processes, mutual
// TLS on loopback) protecting 100 VMs of two disks each on a 30 s policy, with a light write load
// between cycles: every relationship's cycles must come within its interval, and the primary agent
// must stay under 1 GiB. The replicas are then checked byte for byte. (b) The reconciler's full
// pass (observe, plan, a no-op apply, observe again) over 1,000 converged ProtectedVMs on 10 sites.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { sha256File } from '../../src/core/disk/disk.ts';
import { runWorkload } from '../../src/demo/workload.ts';
import { reconcileOnce } from '../../src/reconciler/apply.ts';
import { observeSites } from '../../src/reconciler/observe-sites.ts';
import { plan } from '../../src/reconciler/plan.ts';
import { AgentPair, POLICY_30S, procUsage } from '../lib/agents.ts';
import { convergedFleet } from '../lib/converged-fleet.ts';
import { measureOwn, spread } from '../lib/measure.ts';
import { GiB, MiB, fmtBytes, fmtSize } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Sample, Scenario } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';
import { ROUTES, send } from '../../test/support/agent-client.ts';

const GOAL_RSS = GiB;
const GOAL_PASS_MS = 1000;
const CYCLES = 3;
const DISKS = ['d0', 'd1'];

interface PrimaryView {
  id: string;
  role: string;
  state: string;
  health: string;
  appliedSequence: number;
  lastReplicationTime?: string;
  statistics?: { missedReplicationCount?: number };
}

function percentile(sorted: readonly number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** Runs `fn` over `items`, at most `n` at once. */
async function pool<T>(items: readonly T[], n: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function agentPairScenario(ctx: BenchContext): Promise<Scenario> {
  const count = ctx.quick ? 20 : 100;
  const diskBytes = ctx.quick ? 4 * MiB : 16 * MiB;
  // --quick: a 2 s period through the agent API (which takes any duration; declarations offer
  // 30s/5m/15m/continuous), so the scheduler itself still runs every cycle.
  const intervalMs = ctx.quick ? 2_000 : 30_000;
  const frequency = `${intervalMs / 1000}s`;
  /** A cycle is late when its point's cut comes more than this after the previous point's. */
  const slackMs = Math.min(1_000, intervalMs / 4);
  /** Bytes of random 4 KiB writes per disk per burst; three bursts per interval. */
  const burstBytes = ctx.quick ? 16 * 1024 : 64 * 1024;
  const pair = await AgentPair.start(join(ctx.workDir, 'agents'));
  try {
    const a = pair.primary.client;
    const b = pair.replica.client;
    const names = Array.from({ length: count }, (_, i) => `fleet-${String(i).padStart(3, '0')}`);
    const rel = (vm: string) => `rel-${vm}`;
    const policy = { ...POLICY_30S, frequency };
    ctx.log(`${count} VMs x ${DISKS.length} disks of ${fmtSize(diskBytes)}: creating and replicating initially`);
    const s0 = performance.now();
    await pool(names, 8, async (vm) => {
      await send(a, ROUTES.createVm, {}, { name: vm, disks: DISKS.map((name) => ({ name, size: diskBytes })) });
      await send(a, ROUTES.createRelationship, {}, { id: rel(vm), vm, replica: { name: pair.replica.name, endpoint: pair.replica.url }, policy });
      await send(a, ROUTES.startReplication, { id: rel(vm) }, undefined, { query: { wait: 'true' } });
    });
    const setupMs = performance.now() - s0;
    ctx.log(`initial replication of ${count} VMs done in ${(setupMs / 1000).toFixed(1)} s; ${CYCLES} cycles of ${intervalMs / 1000} s under a light write load`);

    // The poller: every relationship's newest applied point (its cut time) and the lag (age of that point).
    const cuts = new Map<string, { cut: number; seenAt: number }[]>(names.map((vm) => [rel(vm), []]));
    const lags: number[] = [];
    let windowStart = Infinity;
    const list = async () => (await send(a, ROUTES.listRelationships, {})).json<PrimaryView[]>().filter((v) => v.role === 'Primary');
    const poll = async () => {
      const now = Date.now();
      for (const v of await list()) {
        const seen = cuts.get(v.id);
        if (!seen || !v.lastReplicationTime) continue;
        const cut = Date.parse(v.lastReplicationTime);
        if (seen.at(-1)?.cut !== cut) seen.push({ cut, seenAt: now });
        if (now >= windowStart) lags.push((now - cut) / 1000);
      }
    };
    await poll();
    let stop = false;
    const pollEvery = ctx.quick ? 250 : 1_000;
    const poller = (async () => {
      while (!stop) {
        await poll().catch(() => undefined);
        await sleep(pollEvery);
      }
    })();
    let bytesWritten = 0;
    const writer = (async () => {
      for (let round = 0; !stop; round++) {
        const t = performance.now();
        await pool(names, 4, async (vm, i) => {
          for (const [d, disk] of DISKS.entries()) {
            if (stop) return;
            const r = await runWorkload(
              { socketPath: join(pair.primary.dataDir, 'nbd', `${vm}.sock`), exportName: disk },
              { pattern: 'random', blockSize: 4096, totalBytes: burstBytes, seed: round * 1_000 + i * 2 + d, compressible: 0.5 },
            );
            bytesWritten += r.bytesWritten;
          }
        });
        const left = intervalMs / 3 - (performance.now() - t);
        if (left > 0 && !stop) await sleep(left);
      }
    })();

    const [p0, r0] = await Promise.all([procUsage(pair.primary.process.pid!), procUsage(pair.replica.process.pid!)]);
    windowStart = Date.now();
    const windowMs = CYCLES * intervalMs + Math.min(2_000, intervalMs / 2);
    await sleep(windowMs);
    const windowEnd = Date.now();
    const [p1, r1] = await Promise.all([procUsage(pair.primary.process.pid!), procUsage(pair.replica.process.pid!)]);
    stop = true;
    await writer;
    await poller;

    // Every relationship: the gaps between consecutive points cut in the window (the first one
    // measured from the last point before it), and the gap still open when the window closed.
    let late = 0;
    let cycles = 0;
    let maxGapMs = 0;
    const lateIds: string[] = [];
    const applyMs: number[] = [];
    for (const [id, seen] of cuts) {
      const before = seen.filter((c) => c.cut < windowStart).at(-1);
      const inWindow = seen.filter((c) => c.cut >= windowStart && c.cut <= windowEnd);
      let prev = before?.cut;
      let mine = 0;
      for (const c of inWindow) {
        cycles++;
        applyMs.push(c.seenAt - c.cut);
        if (prev !== undefined) {
          maxGapMs = Math.max(maxGapMs, c.cut - prev);
          if (c.cut - prev > intervalMs + slackMs) mine++;
        }
        prev = c.cut;
      }
      const open = windowEnd - (prev ?? windowStart);
      if (open > intervalMs + slackMs) {
        mine++;
        maxGapMs = Math.max(maxGapMs, open);
      }
      if (mine) lateIds.push(id);
      late += mine;
    }
    lags.sort((x, y) => x - y);
    applyMs.sort((x, y) => x - y);
    const views = await list();
    const missed = views.reduce((n, v) => n + (v.statistics?.missedReplicationCount ?? 0), 0);
    const unhealthy = views.filter((v) => v.state !== 'Replicating' || v.health !== 'Normal');

    // Verification: writes have stopped; one more cycle for each sampled VM (as `drsite run`
    // quiesces), then every disk of every sampled VM (every 5th; all with --quick): the replica's newest point = the
    // primary's image, by sha256. Hashing all 200 disks twice takes about 25 s on 2 cores.
    const sample = names.filter((_, i) => ctx.quick || i % 5 === 0);
    const v0 = performance.now();
    // Suspended right after (serialised with cycles): no scheduled cycle prunes the point compared.
    await pool(sample, 8, async (vm) => {
      await send(a, ROUTES.replicateNow, { id: rel(vm) });
      await send(a, ROUTES.suspend, { id: rel(vm) });
    });
    const applied = new Map((await list()).map((v) => [v.id, v.appliedSequence]));
    let compared = 0;
    await pool(sample, 4, async (vm) => {
      const seq = applied.get(rel(vm)) ?? 0;
      for (const disk of DISKS) {
        const want = await sha256File(join(pair.primary.dataDir, 'vms', vm, `${disk}.img`));
        const got = (await send(b, ROUTES.pointDigest, { id: rel(vm), seq, disk })).json<{ sha256: string }>();
        if (got.sha256 !== want) throw new CorrectnessError(`fleet: ${vm}/${disk} replica point ${seq} sha256 ${got.sha256} != primary ${want}`);
        compared++;
      }
    });
    const verifyMs = performance.now() - v0;
    const [pEnd, rEnd] = await Promise.all([procUsage(pair.primary.process.pid!), procUsage(pair.replica.process.pid!)]);

    const p50 = percentile(lags, 50);
    const p99 = percentile(lags, 99);
    const judged = !ctx.quick;
    const window = (cpu0: number, cpu1: number, rss: number, extra: Record<string, number>): Sample => ({ wallMs: windowEnd - windowStart, cpuMs: cpu1 - cpu0, peakRssBytes: rss, extra });
    const coresOf = (cpu: number) => cpu / (windowEnd - windowStart);
    ctx.log(`late cycles ${late} of ${cycles}, max gap ${(maxGapMs / 1000).toFixed(1)} s, lag p50 ${p50.toFixed(1)} s p99 ${p99.toFixed(1)} s; primary RSS ${fmtBytes(pEnd.maxRssBytes)}`);
    return {
      name: `${count} VMs x ${DISKS.length} disks of ${fmtSize(diskBytes)} on one agent pair, ${intervalMs / 1000} s policy${ctx.quick ? ' (quick: set through the agent API)' : ''}, ${CYCLES} cycles, ${fmtBytes(burstBytes)} of random 4 KiB writes per disk every ${Number((intervalMs / 3000).toFixed(1))} s`,
      subjects: [
        { name: `primary agent (${count} relationships)`, ours: true, samples: [window(p0.cpuMs, p1.cpuMs, pEnd.maxRssBytes, { cores: coresOf(p1.cpuMs - p0.cpuMs), lagP50s: p50, lagP99s: p99, lateCycles: late, cycles, maxGapS: maxGapMs / 1000 })] },
        { name: 'replica agent', ours: true, samples: [window(r0.cpuMs, r1.cpuMs, rEnd.maxRssBytes, { cores: coresOf(r1.cpuMs - r0.cpuMs) })] },
        { name: `setup: ${count} VMs created, protected and initially replicated (8 at a time)`, ours: true, samples: [{ wallMs: setupMs, cpuMs: p0.cpuMs + r0.cpuMs, peakRssBytes: Math.max(p0.maxRssBytes, r0.maxRssBytes) }] },
      ],
      goals: [
        {
          text: `every cycle within its interval: 0 late cycles (a point cut more than ${intervalMs / 1000} s + ${slackMs / 1000} s after the previous one, or none for that long)`,
          measured: `${late} late of ${cycles} cycles over ${count} relationships (longest gap ${(maxGapMs / 1000).toFixed(1)} s${lateIds.length ? `; late: ${lateIds.slice(0, 5).join(', ')}${lateIds.length > 5 ? ', ...' : ''}` : ''}); the agent counted ${missed} missed cycles`,
          met: judged ? late === 0 : null,
        },
        { text: 'lag across VMs (age of the newest applied point, sampled every poll)', measured: `p50 ${p50.toFixed(1)} s, p99 ${p99.toFixed(1)} s, max ${(lags.at(-1) ?? NaN).toFixed(1)} s; cut to seen-applied p50 ${(percentile(applyMs, 50) / 1000).toFixed(2)} s, p99 ${(percentile(applyMs, 99) / 1000).toFixed(2)} s`, met: null },
        { text: `primary agent peak RSS <= ${fmtBytes(GOAL_RSS)}`, measured: `${fmtBytes(pEnd.maxRssBytes)} (replica agent ${fmtBytes(rEnd.maxRssBytes)})`, met: judged ? pEnd.maxRssBytes <= GOAL_RSS : null },
        { text: 'CPU of the agents during the window', measured: `primary ${coresOf(p1.cpuMs - p0.cpuMs).toFixed(2)} cores, replica ${coresOf(r1.cpuMs - r0.cpuMs).toFixed(2)} cores (${(bytesWritten / MiB).toFixed(0)} MiB written by the load)`, met: null },
      ],
      verified: `after the window, writes stopped, one more cycle for each sampled VM (replicate-now, then suspend): sha256 of the replica's newest point = the primary image for ${compared}/${sample.length * DISKS.length} disks of ${sample.length} of the ${count} VMs (${(verifyMs / 1000).toFixed(1)} s); ${unhealthy.length ? `${unhealthy.length} relationships not Replicating/Normal at the end of the window (${unhealthy.slice(0, 3).map((v) => `${v.id} ${v.state}/${v.health}`).join(', ')})` : 'every relationship Replicating/Normal at the end of the window'}`,
    };
  } finally {
    await pair.stop();
  }
}

async function reconcilerScenario(ctx: BenchContext): Promise<Scenario> {
  const spec = { vms: ctx.quick ? 50 : 1000, sites: 10, diskBytes: MiB, frequency: '15m' } as const;
  const fleet = await convergedFleet(join(ctx.workDir, 'reconciler'), spec, ctx.log);
  try {
    ctx.log(`converged in ${fleet.setup.passes} passes (${fleet.setup.actions.length} actions, ${(fleet.setup.convergeMs / 1000).toFixed(1)} s); timing full passes`);
    const runs = Math.max(7, ctx.runs);
    await reconcileOnce(fleet.pass()); // warm-up: JIT, connection pools; not counted
    const samples: Sample[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await measureOwn(() => reconcileOnce(fleet.pass()));
      const p = r.value;
      if (p.plan.actions.length || p.jobs.length || !p.converged) {
        throw new CorrectnessError(`fleet reconcile pass ${i + 1} over a converged fleet planned ${p.plan.actions.length} actions, ran ${p.jobs.length} jobs, converged ${p.converged}: not a no-op`);
      }
      samples.push(r.sample);
    }
    // The parts of a pass, timed alone: one observe (every site's VMs and relationships) and one plan().
    const observeMs: number[] = [];
    const planMs: number[] = [];
    for (let i = 0; i < runs; i++) {
      let t = performance.now();
      const obs = await observeSites(fleet.desired, fleet.sites, fleet.vault, new Date());
      observeMs.push(performance.now() - t);
      t = performance.now();
      plan(fleet.desired, obs.observed);
      planMs.push(performance.now() - t);
    }
    const wall = spread(samples.map((s) => s.wallMs));
    const planned = fleet.setup.actions;
    const obs = spread(observeMs);
    const pl = spread(planMs);
    ctx.log(`full pass median ${wall.median.toFixed(0)} ms, slowest ${wall.max.toFixed(0)} ms (observe ${obs.median.toFixed(0)} ms, plan ${pl.median.toFixed(0)} ms)`);
    return {
      name: `${spec.vms} converged ProtectedVMs on ${spec.sites} embedded sites (${spec.vms / spec.sites} primaries and ${spec.vms / spec.sites} replicas each): full reconcile pass`,
      subjects: [
        { name: 'drsite reconcileOnce (observe, record, plan, no-op apply, observe, record, plan)', ours: true, samples: samples.map((s, i) => ({ ...s, extra: { observeMs: observeMs[i], planMs: planMs[i] } })) },
      ],
      goals: [
        { text: `<= ${GOAL_PASS_MS} ms per pass (slowest of ${runs})`, measured: `median ${wall.median.toFixed(0)} ms, slowest ${wall.max.toFixed(0)} ms (alone: observe median ${obs.median.toFixed(0)} ms, plan() median ${pl.median.toFixed(0)} ms)`, met: ctx.quick ? null : wall.max <= GOAL_PASS_MS },
      ],
      verified: `every timed pass: 0 actions planned, 0 jobs, converged (all ${spec.vms} Replicating/Normal). Setup: ${spec.vms} VMs created and protected in ${(fleet.setup.protectMs / 1000).toFixed(1)} s, then ${fleet.setup.passes} reconcile passes until converged (which planned ${planned.length ? `${planned.length} actions: ${planned.slice(0, 5).join(', ')}${planned.length > 5 ? ', ...' : ''}` : 'nothing'}) in ${(fleet.setup.convergeMs / 1000).toFixed(1)} s`,
    };
  } finally {
    await fleet.close();
  }
}

export const fleet: BenchCase = {
  name: 'fleet',
  title: '13. Fleet scale on one host',
  goal: `100 VMs on one agent pair at 30 s: 0 late cycles, primary agent <= 1 GiB; a full reconcile pass over 1,000 ProtectedVMs on 10 sites <= ${GOAL_PASS_MS} ms`,
  async run(ctx: BenchContext): Promise<CaseResult> {
    const scenarios = [await agentPairScenario(ctx), await reconcilerScenario(ctx)];
    return {
      status: 'ok',
      scenarios,
      notes: [
        'Agent pair: two `drsite agent` processes (bench/lib/agents.ts), the files hypervisor, every VM written through its NBD export (4 writers at a time, a burst per disk every third of the interval, half-compressible data). Late cycles and lag come from polling the primary\'s relationship list (every 1 s; 250 ms with --quick): a relationship\'s points are told apart by their cut time (lastReplicationTime). CPU is each agent\'s own over the window (/proc), in cores; peak RSS is VmHWM over the agent\'s whole life (initial replication included).',
        'Reconciler: the agents of the 10 sites are embedded (started in the bench process by src/sites/open-sites.ts, as `drsite run` does with sites declared without an endpoint); the reconciler reaches each over HTTPS with mutual TLS on loopback. A pass is reconcileOnce() as `drsite run` calls it: observe every site (GET /v1/vms and /v1/relationships), record status in the SQLite vault, plan, apply nothing, observe and record again, plan again for the converged check. CPU and RSS are this process\'s, which includes the 10 embedded agents answering. The fleet is set up first with the calls and vault marks the executor makes (8 at a time, not the reconciler\'s one-by-one apply, to keep the case short), then reconcile passes until converged (1 MiB disk a VM, 15 m policy so no cycle runs during the timing); the vault therefore has no job history of that setup. Remote sites (agents as separate processes) are not measured here.',
        ...(ctx.quick ? ['Quick: 20 VMs x 2 disks of 4 MiB at a 2 s period; the reconciler pass over 50 ProtectedVMs. Nothing is judged.'] : []),
      ],
    };
  },
};

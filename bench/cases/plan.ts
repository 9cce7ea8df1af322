// Case 7: plan() for 1,000 protected VMs, through bench/plan.bench.ts (empty, converged and
// 10%-drifted observations). plan() is synchronous and pure: wall time is its CPU time.
import { benchPlan } from '../plan.bench.ts';
import type { BenchCase, BenchContext, CaseResult, Scenario } from '../lib/types.ts';

const GOAL_MS = 200;

export const planCase: BenchCase = {
  name: 'plan',
  title: '7. plan() for 1,000 protected VMs',
  goal: `<= ${GOAL_MS} ms per pass`,
  async run(_ctx: BenchContext): Promise<CaseResult> {
    const results = await benchPlan();
    const rss = process.resourceUsage().maxRSS * 1024;
    const scenarios: Scenario[] = results.map((r) => ({
      name: `${r.vms} VMs, ${r.case} observation (${r.actions} actions)`,
      subjects: [{ name: 'drsite plan()', ours: true, samples: r.runs.map((ms) => ({ wallMs: ms, cpuMs: ms, peakRssBytes: rss })) }],
      goals: [{ text: `<= ${GOAL_MS} ms (slowest of ${r.runs.length} runs)`, measured: `${r.max} ms`, met: r.max <= GOAL_MS }],
      verified: `${r.actions} actions, ${r.warnings} warnings (the same plan on every run; plan() is pure)`,
    }));
    return { status: 'ok', scenarios, notes: ['No peer. One warm-up pass, then 7 timed passes per observation; peak RSS is the whole case process.'] };
  },
};

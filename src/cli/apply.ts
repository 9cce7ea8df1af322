// `drsite apply`: one reconcile pass. Observe the sites, print the plan, apply it one journaled
// action at a time, print the jobs. Exit 1 when a job failed or a declared action is refused.
import { loadDesiredState } from '../config/index.ts';
import { formatDiagnostic } from '../model/diagnostics.ts';
import { recoverInterrupted, reconcileOnce } from '../reconciler/apply.ts';
import { formatPlan, planToJson } from '../reconciler/plan-format.ts';
import { openSession } from '../reconciler/session.ts';
import { startSampleCompanion } from '../demo/sample-vms.ts';
import type { Job } from '../vault/vault.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, renderTable, type Io } from './output.ts';
import { waitLockMs } from './wait-lock.ts';

export function jobRows(jobs: readonly Job[]): string {
  return renderTable(
    ['Job', 'Type', 'Target', 'State', 'Error'],
    jobs.map((j) => [j.id, j.type, j.target, j.state, j.error?.message ?? '']),
  );
}

export async function applyCommand(paths: string[], g: GlobalOptions, io: Io, flags: { samples: boolean } = { samples: true }): Promise<number> {
  const loaded = await loadDesiredState(paths);
  for (const d of loaded.diagnostics) io.err(formatDiagnostic(d));
  if (!loaded.ok) return 1;
  const json = g.output === 'json';
  const session = await openSession({
    desired: loaded.state, vaultPath: g.vault!, stateDir: g.stateDir, command: 'drsite apply', waitLockMs: waitLockMs(g),
    ...(flags.samples && { companion: (sites: Parameters<typeof startSampleCompanion>[1]) => startSampleCompanion(paths, sites, (l) => !json && io.out(l)) }),
    report: (l) => !json && io.out(l),
  });
  try {
    recoverInterrupted(session.vault);
    const r = await reconcileOnce({
      desired: session.desired, sites: session.sites, vault: session.vault, stateDir: session.stateDir,
      report: (l) => !json && io.out(l),
      onPlan: (p) => !json && io.out(formatPlan(p, { color: process.stdout.isTTY === true })),
    });
    const failed = r.jobs.filter((j) => j.state === 'Failed');
    const ok = failed.length === 0 && r.unmet.length === 0;
    if (json) printJson(io, { ok, plan: JSON.parse(planToJson(r.plan)), jobs: r.jobs, converged: r.converged, refused: r.unmet });
    else {
      if (r.jobs.length) io.out(jobRows(r.jobs));
      // A declared action that cannot run is an error, not "no changes": a pipeline must not take it for done.
      for (const w of r.unmet) io.err(`error: ${w.target.kind}/${w.target.name}: ${w.message}`);
      if (r.unmet.length) io.err(`drsite apply: ${r.unmet.length} declared action${r.unmet.length === 1 ? '' : 's'} not met; fix the declaration or the state it needs, then apply again`);
    }
    return ok ? 0 : 1;
  } finally {
    await session.close();
  }
}

// `drsite validate`: load declarations and print every diagnostic, or a one-line summary.
import { loadDesiredState } from '../config/index.ts';
import { formatDiagnostic } from '../model/diagnostics.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, type Io } from './output.ts';

export async function validateCommand(paths: string[], g: GlobalOptions, io: Io): Promise<number> {
  const result = await loadDesiredState(paths);
  if (g.output === 'json') {
    printJson(io, {
      valid: result.ok,
      diagnostics: result.diagnostics,
      ...(result.ok ? { resources: countResources(result.state) } : {}),
    });
    return result.ok ? 0 : 1;
  }
  for (const d of result.diagnostics) io.err(formatDiagnostic(d));
  if (!result.ok) {
    const errors = result.diagnostics.filter((d) => d.severity === 'error').length;
    io.err(`${errors} error${errors === 1 ? '' : 's'}: declarations are not valid.`);
    return 1;
  }
  const counts = countResources(result.state);
  io.out(
    `Valid: ${Object.entries(counts)
      .map(([k, n]) => `${n} ${k}`)
      .join(', ')}.`,
  );
  return 0;
}

function countResources(s: import('../model/desired.ts').DesiredState): Record<string, number> {
  return {
    sites: s.sites.length,
    policies: s.policies.length,
    networkMappings: s.networkMappings.length,
    protectedVms: s.protectedVms.length,
    recoveryPlans: s.recoveryPlans.length,
  };
}

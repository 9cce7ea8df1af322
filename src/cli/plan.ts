// `drsite plan`: compare the declarations with the state the vault last recorded and print the
// actions apply would take. Pure read: nothing is recorded.
import { loadDesiredState } from '../config/index.ts';
import { formatDiagnostic } from '../model/diagnostics.ts';
import { plan } from '../reconciler/plan.ts';
import { formatPlan, planToJson } from '../reconciler/plan-format.ts';
import { unmetDeclarations } from '../reconciler/plan-types.ts';
import { observedFromVault } from '../reconciler/observe-vault.ts';
import { Vault } from '../vault/vault.ts';
import type { GlobalOptions } from './main.ts';
import type { Io } from './output.ts';

export async function planCommand(
  paths: string[],
  opts: { detailedExitcode: boolean },
  g: GlobalOptions,
  io: Io,
): Promise<number> {
  const loaded = await loadDesiredState(paths);
  for (const d of loaded.diagnostics) io.err(formatDiagnostic(d));
  if (!loaded.ok) return 1;
  const vault = Vault.open(g.vault);
  try {
    const p = plan(loaded.state, observedFromVault(vault, loaded.state, new Date()));
    io.out(g.output === 'json' ? planToJson(p) : formatPlan(p, { color: process.stdout.isTTY === true }));
    const refused = unmetDeclarations(p);
    if (refused.length > 0 && g.output !== 'json') io.err(`drsite plan: ${refused.length} declared action${refused.length === 1 ? '' : 's'} refused (see the warnings); apply would not meet the declarations`);
    if (refused.length > 0) return 1;
    return opts.detailedExitcode && p.actions.length > 0 ? 2 : 0;
  } finally {
    vault.close();
  }
}

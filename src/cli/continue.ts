// `drsite continue <plan>`: an operator confirms the manual action a recovery plan waits on. Only
// the vault is written; the running loop (or the next apply) resumes the plan from there.
import { continuePlan } from '../reconciler/recovery-plan.ts';
import { Vault } from '../vault/vault.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, type Io } from './output.ts';

export async function continueCommand(plan: string, g: GlobalOptions, io: Io): Promise<number> {
  const vault = Vault.open(g.vault);
  try {
    const r = continuePlan(vault, plan);
    if (g.output === 'json') printJson(io, r);
    else io.out(`Recovery plan ${plan}: ${r.step} confirmed; the plan resumes on the next pass (job ${r.jobId}).`);
    return 0;
  } finally {
    vault.close();
  }
}

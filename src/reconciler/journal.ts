// Journaled calls to the sites: each external call is a job step with a pending mark written
// durably before the call and cleared after, so a process killed mid-call leaves a mark that the
// next run resolves by asking the sites whether the call took effect (never by guessing): done ->
// the step is recorded as succeeded without calling again; not done -> the call is made again.
import { RetryableError, TerminalError } from '../model/errors.ts';
import type { Site } from '../sites/site.ts';
import type { Vault } from '../vault/vault.ts';

export interface SiteCall {
  /** Step name inside its job; unique per job. */
  name: string;
  site: Site;
  /** The call itself: one verb of the site's port. */
  run: (site: Site) => Promise<unknown>;
  /** Reads the site: has this call's effect already happened? Used only to resolve a pending mark. */
  done: () => Promise<boolean>;
}

export const pendingKey = (jobId: string, step: string): string => `call:${jobId}:${step}`;

/**
 * Runs the calls in order inside job `jobId`, skipping steps already Succeeded (a resumed job).
 * Throws the first failure after recording it on its step; the job itself is left for the caller.
 */
export async function runJournaledCalls(vault: Vault, jobId: string, calls: readonly SiteCall[]): Promise<Record<string, unknown>> {
  const outputs: Record<string, unknown> = {};
  for (const call of calls) {
    const key = pendingKey(jobId, call.name);
    const prior = vault.getJob(jobId)?.steps.find((s) => s.name === call.name);
    if (prior?.state === 'Succeeded' || prior?.state === 'Skipped') {
      outputs[call.name] = prior.output;
      continue;
    }
    vault.startStep(jobId, call.name);
    if (vault.getPending(key)) {
      // The previous attempt's outcome is unknown: look before acting again.
      let isDone: boolean;
      try {
        isDone = await call.done();
      } catch (e) {
        vault.endStep(jobId, call.name, { state: 'Failed', error: e });
        throw e;
      }
      vault.clearPending(key);
      if (isDone) {
        vault.endStep(jobId, call.name, { state: 'Succeeded', output: { resolved: 'found already done after a restart' } });
        continue;
      }
    }
    vault.markPending(key, { jobId, step: call.name, site: call.site.name });
    try {
      const out = await call.run(call.site);
      vault.transaction(() => {
        vault.clearPending(key);
        vault.endStep(jobId, call.name, { state: 'Succeeded', ...(out !== undefined && { output: summarize(out) }) });
      });
      outputs[call.name] = out;
    } catch (e) {
      // The agent answered (or the connection failed before a request left): an answered error is
      // a known outcome, so the mark goes. A network error leaves it unknown, so the mark stays and
      // the retry looks first.
      vault.transaction(() => {
        if (!(RetryableError.is(e) && e.code === 'network')) vault.clearPending(key);
        vault.endStep(jobId, call.name, { state: 'Failed', error: e });
      });
      throw e;
    }
  }
  return outputs;
}

/** Keeps a step's output small: views carry statistics the job does not need. */
function summarize(out: unknown): unknown {
  if (typeof out !== 'object' || out === null) return out;
  const o = out as Record<string, unknown>;
  const keep: Record<string, unknown> = {};
  for (const k of ['id', 'state', 'vm', 'testVm', 'sequence', 'recoveryPoint', 'removed', 'name', 'power', 'terraformDir', 'terraformFile', 'method', 'bytesDownloaded', 'diskBytes', 'disks']) if (k in o) keep[k] = o[k];
  return Object.keys(keep).length ? keep : null;
}

export function unsupported(what: string): never {
  throw new TerminalError('invalid-argument', `${what} is not supported by the host agent yet`);
}

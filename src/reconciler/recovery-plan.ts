// Recovery plans: a declared failover request runs as one RecoveryPlan job whose child jobs are
// the per-VM steps. Groups run in declared order, the VMs of a group in parallel, each group's
// `before` / `after` actions around them (scripts, or manual waits for `drsite continue`).
//
// Crash safety: everything the plan needs is frozen into the job's input when it starts, and each
// step's completion is journaled in the vault before the next one starts. Resuming walks the
// same steps: Succeeded ones are skipped, an interrupted VM step resolves its pending marks
// against the sites (journal.ts), an interrupted script is taken from its on-disk journal and only
// run again if it never completed (script-action.ts).
import { dirname, join } from 'node:path';
import type { FailoverRequest, RecoveryAction, RecoveryPlan } from '../model/desired.ts';
import { TerminalError } from '../model/errors.ts';
import { lookup } from '../model/observed.ts';
import { formatBytes, parseDuration } from '../model/units.ts';
import type { Job, Vault } from '../vault/vault.ts';
import { JOB_TYPE, failoverCalls, finish, startJob, type ExecContext, type VmStep } from './executor.ts';
import { failoverAdapters } from './failover-network.ts';
import { runJournaledCalls } from './journal.ts';
import type { FailoverActionType, PlannedAction } from './plan-types.ts';
import { relationshipId } from './relationship-ids.ts';
import { resumeScript, runScript, type ScriptResult } from './script-action.ts';
import { setStatusFields } from './status-fields.ts';
import { inGroup } from '../core/replication/replication-state.ts';

export interface PlanGroupInput {
  index: number;
  name?: string;
  vms: string[];
  before: RecoveryAction[];
  after: RecoveryAction[];
  /** Per VM of the group, its steps in order. */
  steps: VmStep[][];
}

export interface PlanJobInput {
  plan: string;
  failoverId: string;
  failoverType: FailoverRequest['type'];
  cleanupTest: boolean;
  recoveryPoint: string;
  /** `source->target` as the scripts see it. */
  direction: string;
  groups: PlanGroupInput[];
}

/** Deferred: the plan stays Running and a later pass resumes it (a VM must resynchronize first). */
export type PlanOutcome = 'Succeeded' | 'Failed' | 'Waiting' | 'Deferred';

// A host that crashed (an embedded agent killed with its reconciler) loses change tracking, so its
// relationships need a resync before a final delta can be shipped. A planned failover waits for
// it rather than fail: the same pass's protection actions run the resync, a later pass goes on.

class StepDeferred extends Error {}
const lastDeferral = new Map<string, string>();

const target = (plan: string) => `RecoveryPlan/${plan}`;

/** Freezes a plan's request and its planned per-VM actions into a job input. */
export function planJobInput(ctx: ExecContext, rp: RecoveryPlan, actions: readonly PlannedAction[]): PlanJobInput {
  const f = rp.spec.failover!;
  const { observed, current, snapshots } = ctx.observation;
  const byVm = new Map<string, PlannedAction[]>();
  for (const a of actions) byVm.set(a.target.name, [...(byVm.get(a.target.name) ?? []), a]);
  let direction = '';
  const groups: PlanGroupInput[] = rp.spec.groups.map((g, index) => {
    const steps: VmStep[][] = [];
    for (const name of [...g.vms].sort()) {
      const list = byVm.get(name);
      if (!list) continue;
      byVm.delete(name); // a VM listed in two groups runs in the first
      const rel = lookup(observed.relationships, name)!;
      const pvm = ctx.desired.protectedVms.find((p) => p.metadata.name === name);
      let k = current.get(name)?.k ?? 0;
      const vmAdapters = (from: string) => {
        const snap = snapshots.get(from);
        return snap?.reachable ? snap.vms.find((v) => v.name === rel.vm)?.adapters : undefined;
      };
      const mine: VmStep[] = list.map((a, n) => {
        const type = a.type as FailoverActionType;
        const d = a.details as { site?: string; from?: string; to?: string; recoveryPoint?: string; testNetwork?: string | null; method?: VmStep['method']; forceShutdown?: boolean };
        const s: VmStep = { key: `group-${index + 1}/${name}/${n + 1}-${type}`, type, protectedVm: name, vm: rel.vm, relationshipId: relationshipId(name, k) };
        if (d.site !== undefined) s.site = d.site;
        if (d.from !== undefined) s.from = d.from;
        if (d.to !== undefined) s.to = d.to;
        if (d.recoveryPoint !== undefined) s.recoveryPoint = d.recoveryPoint;
        if (d.forceShutdown) s.forceShutdown = true;
        // A failback from Azure downloads by its own method (a host failback's reverse step carries it).
        if (type === 'failback' && d.method !== undefined) s.method = d.method;
        if (type === 'test-failover') {
          s.testNetwork = d.testNetwork ?? null;
          s.adapters = failoverAdapters(ctx.desired, pvm, vmAdapters(rel.direction.primary), rel.direction.primary, d.site!, true);
        }
        if (type === 'planned-failover' || type === 'unplanned-failover' || type === 'failback') {
          s.adapters = failoverAdapters(ctx.desired, pvm, vmAdapters(d.from!), d.from!, d.to!, false);
        }
        if (type === 'reverse-replication') {
          s.newRelationshipId = relationshipId(name, ++k);
          // The reverse that brings the data home before a failback honours failbackMethod.
          if (f.type === 'failback' && f.failbackMethod === 'full-download' && list.slice(n + 1).some((x) => x.type === 'failback')) s.method = 'full-download';
          const policy = ctx.desired.policies.find((p) => p.metadata.name === pvm?.spec.policy);
          if (policy) s.policy = policy.spec;
        }
        direction ||= d.from && d.to ? `${d.from}->${d.to}` : `${rel.direction.primary}->${rel.direction.replica}`;
        return s;
      });
      steps.push(mine);
    }
    return { index, ...(g.name !== undefined && { name: g.name }), vms: [...g.vms], before: g.before ?? [], after: g.after ?? [], steps };
  });
  return {
    plan: rp.metadata.name,
    failoverId: f.id,
    failoverType: f.type,
    cleanupTest: f.cleanupTest === true,
    recoveryPoint: f.recoveryPoint ?? 'latest',
    direction,
    groups,
  };
}

/** Starts the plan's job (recording the new action id first, so the same id is never run twice). */
export function startPlanJob(vault: Vault, input: PlanJobInput): Job {
  return vault.transaction(() => {
    const job = startJob(vault, { type: 'RecoveryPlan', target: target(input.plan), input }, `failover ${input.failoverId} (${input.cleanupTest ? 'cleanupTest' : input.failoverType}) started`);
    vault.recordAction('RecoveryPlan', input.plan, { id: input.failoverId, type: input.cleanupTest ? 'cleanupTest' : input.failoverType, jobId: job.id, state: 'Running' });
    // A new action clears what the previous one left in the status.
    vault.setStatus('RecoveryPlan', input.plan, {
      observedGeneration: vault.getDesired('RecoveryPlan', input.plan)?.generation ?? 0,
      conditions: [],
      fields: { lastAction: { id: input.failoverId, type: input.failoverType, jobId: job.id, state: 'Running', startedAt: job.startedAt } },
    });
    return job;
  });
}

function recordOutcome(vault: Vault, job: Job, input: PlanJobInput, state: 'Running' | 'Waiting' | 'Succeeded' | 'Failed', extra: Record<string, unknown> = {}): void {
  vault.recordAction('RecoveryPlan', input.plan, { id: input.failoverId, type: input.cleanupTest ? 'cleanupTest' : input.failoverType, jobId: job.id, state });
  const prev = vault.getStatus('RecoveryPlan', input.plan);
  vault.setStatus('RecoveryPlan', input.plan, {
    observedGeneration: prev?.observedGeneration ?? 0,
    conditions: prev?.conditions ?? [],
    fields: { lastAction: { id: input.failoverId, type: input.failoverType, jobId: job.id, state, startedAt: job.startedAt, ...extra } },
  });
}

const applies = (a: RecoveryAction, input: PlanJobInput): boolean =>
  !input.cleanupTest && ((a.failoverTypes as string[] | undefined) ?? ['test', 'planned', 'unplanned', 'failback']).includes(input.failoverType);

/** Runs (or resumes) a RecoveryPlan job until it ends or waits for `drsite continue`. */
export async function runPlanJob(ctx: ExecContext, jobId: string): Promise<PlanOutcome> {
  const { vault } = ctx;
  const job = vault.getJob(jobId);
  if (!job || job.type !== 'RecoveryPlan') throw new TerminalError('not-found', `recovery plan job ${jobId} not found`);
  if (job.state !== 'Running' && job.state !== 'Waiting') return job.state === 'Succeeded' ? 'Succeeded' : 'Failed';
  const input = job.input as PlanJobInput;
  const stepState = (name: string) => vault.getJob(jobId)?.steps.find((s) => s.name === name);
  try {
    for (const g of input.groups) {
      const label = `group ${g.index + 1}${g.name ? ` (${g.name})` : ''}`;
      for (const [phase, list] of [['before', g.before], ['after', g.after]] as const) {
        if (phase === 'after') {
          // VMs of a group in parallel; the plan fails on the first failure, after the others end.
          const settled = await Promise.allSettled(g.steps.map(async (vmSteps) => {
            for (const s of vmSteps) await runVmStep(ctx, job, s);
          }));
          const rejected = settled.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
          const failed = rejected.find((r) => !(r.reason instanceof StepDeferred));
          if (failed) throw failed.reason;
          if (rejected.length > 0) {
            const why = `RecoveryPlan ${input.plan}: ${label} waits: ${rejected.map((r) => (r.reason as Error).message).join('; ')}`;
            // Said once, not on every pass of the loop while the resync runs.
            if (lastDeferral.get(jobId) !== why) ctx.report(why);
            lastDeferral.set(jobId, why);
            return 'Deferred';
          }
        }
        for (const [i, a] of list.entries()) {
          if (!applies(a, input)) continue;
          const name = `group-${g.index + 1}/${phase}/${a.name ?? i + 1}`;
          const prior = stepState(name);
          if (prior?.state === 'Succeeded') continue;
          if (a.manual) {
            if (!prior) {
              vault.transaction(() => {
                vault.startStep(jobId, name);
                vault.setJobState(jobId, 'Waiting');
                recordOutcome(vault, job, input, 'Waiting', { waitingFor: a.manual!.message });
                vault.recordEvent({ kind: 'RecoveryPlan', name: input.plan, type: 'Normal', reason: 'WaitingForOperator', message: `${label}: ${a.manual!.message} (drsite continue ${input.plan})` });
              });
              ctx.report(`RecoveryPlan ${input.plan}: ${label} waits: ${a.manual.message} -- run \`drsite continue ${input.plan}\``);
            }
            return 'Waiting';
          }
          await runScriptStep(ctx, job, input, g, phase, name, a);
        }
      }
      ctx.report(`RecoveryPlan ${input.plan}: ${label} done`);
    }
    vault.transaction(() => {
      finish(vault, jobId, 'Succeeded');
      recordOutcome(vault, job, input, 'Succeeded', { endedAt: new Date(ctx.clock.now()).toISOString() });
    });
    ctx.report(`RecoveryPlan ${input.plan}: failover ${input.failoverId} (${input.failoverType}) succeeded`);
    return 'Succeeded';
  } catch (e) {
    vault.transaction(() => {
      finish(vault, jobId, 'Failed', e);
      recordOutcome(vault, job, input, 'Failed', { error: (e as Error).message, endedAt: new Date(ctx.clock.now()).toISOString() });
    });
    ctx.report(`RecoveryPlan ${input.plan}: failover ${input.failoverId} failed: ${(e as Error).message}`);
    return 'Failed';
  }
}

async function runVmStep(ctx: ExecContext, plan: Job, s: VmStep): Promise<void> {
  const { vault } = ctx;
  const prior = vault.getJob(plan.id)?.steps.find((x) => x.name === s.key);
  if (prior?.state === 'Succeeded') return;
  const state = lookup(ctx.observation.observed.relationships, s.protectedVm)?.state;
  if (s.type === 'planned-failover' && inGroup(state, 'resync')) {
    throw new StepDeferred(`${s.protectedVm} is ${state} (its host restarted); its planned failover starts once it replicates again`);
  }
  vault.startStep(plan.id, s.key);
  let child = vault.listJobs({ parentId: plan.id, state: 'Running', limit: 500 }).find((j) => (j.input as { key?: string } | undefined)?.key === s.key);
  child ??= startJob(vault, { type: JOB_TYPE[s.type], target: `ProtectedVM/${s.protectedVm}`, parentId: plan.id, input: { key: s.key, step: s } }, `${s.key} of recovery plan ${plan.target.replace(/^RecoveryPlan\//, '')} (job ${plan.id})`);
  let outputs: Record<string, unknown>;
  try {
    outputs = await runJournaledCalls(vault, child.id, failoverCalls(ctx.sites, s, child.id));
  } catch (e) {
    vault.transaction(() => {
      finish(vault, child.id, 'Failed', e);
      vault.endStep(plan.id, s.key, { state: 'Failed', error: e, output: { job: child.id } });
    });
    throw new TerminalError(TerminalError.is(e) ? e.code : 'invalid-state', `${s.type} of ${s.protectedVm}: ${(e as Error).message}`, { cause: e });
  }
  vault.transaction(() => {
    finish(vault, child.id, 'Succeeded');
    vault.endStep(plan.id, s.key, { state: 'Succeeded', output: { job: child.id } });
    if (s.type === 'reverse-replication' && s.policy) {
      const pvm = ctx.desired.protectedVms.find((p) => p.metadata.name === s.protectedVm);
      if (pvm) setStatusFields(vault, s.protectedVm, { policyName: pvm.spec.policy });
    }
  });
  ctx.report(`${JOB_TYPE[s.type]} ${s.protectedVm}: done (${s.type})`);
  for (const out of Object.values(outputs)) {
    const o = out as { vm?: string; terraformDir?: string; terraformFile?: string; method?: string; bytesDownloaded?: number; diskBytes?: number } | null | undefined;
    if (o?.bytesDownloaded !== undefined) ctx.report(`  downloaded ${formatBytes(o.bytesDownloaded)} of ${formatBytes(o.diskBytes ?? 0)} from Azure (${o.method})`);
    // An azure site cannot start the VM itself: say where its Terraform is.
    if (o?.terraformFile) ctx.report(`  ${o.vm} in Azure: terraform apply in ${dirname(o.terraformFile)}`);
    else if (o?.terraformDir) ctx.report(`  remove the Azure resources with terraform destroy under ${o.terraformDir}`);
  }
}

async function runScriptStep(ctx: ExecContext, plan: Job, input: PlanJobInput, g: PlanGroupInput, phase: string, name: string, a: RecoveryAction): Promise<void> {
  const { vault } = ctx;
  const script = a.script!;
  const timeoutMs = parseDuration(script.timeout ?? '5m') ?? 300_000;
  const slug = name.replace(/[^A-Za-z0-9._-]/g, '_');
  const dirFor = (attempt: number) => join(ctx.stateDir, 'journal', plan.id, slug, String(attempt));
  const prior = vault.getJob(plan.id)?.steps.find((x) => x.name === name);
  let result: ScriptResult | undefined;
  if (prior?.state === 'Running') result = await resumeScript(dirFor(prior.attempt), timeoutMs, ctx.clock);
  if (!result) {
    const step = vault.startStep(plan.id, name);
    result = await runScript(dirFor(step.attempt), {
      path: script.path,
      args: script.args ?? [],
      timeoutMs,
      cwd: process.cwd(),
      env: {
        DRSITE_PLAN: input.plan,
        DRSITE_FAILOVER_ID: input.failoverId,
        DRSITE_FAILOVER_TYPE: input.failoverType,
        DRSITE_DIRECTION: input.direction,
        DRSITE_GROUP: g.name ?? String(g.index + 1),
        DRSITE_GROUP_INDEX: String(g.index + 1),
        DRSITE_GROUP_VMS: g.vms.join(','),
        DRSITE_RECOVERY_POINT: input.recoveryPoint,
        DRSITE_PHASE: phase,
        DRSITE_ACTION: a.name ?? '',
        ...(Object.fromEntries(Object.entries(script.env ?? {}).filter((e): e is [string, string] => e[1] !== undefined))),
      },
    });
  }
  const output = { exitCode: result.exitCode, stdout: result.stdoutTail, stderr: result.stderrTail, ...(result.resumed && { resumed: true }) };
  if (result.exitCode === 0) {
    vault.transaction(() => {
      vault.endStep(plan.id, name, { state: 'Succeeded', output });
      vault.recordEvent({ kind: 'RecoveryPlan', name: input.plan, type: 'Normal', reason: 'ScriptSucceeded', message: `${name}: ${script.path} exited 0` });
    });
    return;
  }
  const why = result.timedOut ? `timed out after ${script.timeout ?? '5m'} and was killed` : `exited with code ${result.exitCode}`;
  const err = new TerminalError('invalid-state', `action ${name}: script ${script.path} ${why}${result.stderrTail || result.stdoutTail ? `: ${(result.stderrTail || result.stdoutTail).trim().split('\n').slice(-5).join(' | ')}` : ''}`);
  vault.transaction(() => {
    vault.endStep(plan.id, name, { state: 'Failed', error: err, output });
    vault.recordEvent({ kind: 'RecoveryPlan', name: input.plan, type: 'Warning', reason: 'ScriptFailed', message: err.message });
  });
  throw err;
}

/** `drsite continue <plan>`: ends the manual step the plan waits on; the loop resumes the plan. */
export function continuePlan(vault: Vault, plan: string): { jobId: string; step: string } {
  return vault.transaction(() => {
    const waiting = vault.listJobs({ target: target(plan), type: 'RecoveryPlan', state: 'Waiting', limit: 1 })[0];
    if (!waiting) throw new TerminalError('invalid-state', `recovery plan ${plan} is not waiting for a manual action`);
    const job = vault.getJob(waiting.id)!;
    const step = job.steps.find((s) => s.state === 'Running');
    if (!step) throw new TerminalError('invalid-state', `recovery plan ${plan} job ${job.id} waits but no step is open`);
    vault.endStep(job.id, step.name, { state: 'Succeeded', output: { continued: true } });
    vault.setJobState(job.id, 'Running');
    const input = job.input as PlanJobInput;
    recordOutcome(vault, job, input, 'Running');
    vault.recordEvent({ kind: 'RecoveryPlan', name: plan, type: 'Normal', reason: 'Continued', message: `${step.name} confirmed by an operator` });
    return { jobId: job.id, step: step.name };
  });
}

/** Open RecoveryPlan jobs that can make progress now (Running; Waiting ones wait for continue). */
export function runnablePlanJobs(vault: Vault): string[] {
  return vault.listJobs({ type: 'RecoveryPlan', state: 'Running', parentId: null, limit: 100 }).map((j) => j.id).reverse();
}


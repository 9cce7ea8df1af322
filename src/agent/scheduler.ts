// The shipping schedule: each relationship cycles every policy period (or at its retry time after
// a failure); the members of a multi-VM consistency group cycle together, cut at one instant.
import { randomUUID } from 'node:crypto';
import { cutGroup } from '../core/tracking/cut.ts';
import type { TrackedDisk } from '../core/tracking/tracker.ts';
import type { AgentContext } from './context.ts';
import type { GroupMemberSource } from '../core/replication/ports.ts';
import type { PrimaryReplication } from '../core/replication/primary.ts';
import type { CycleResult } from '../core/replication/primary-record.ts';

export type GroupCycleResult = Record<string, CycleResult | { error: unknown }>;

export class Scheduler {
  readonly #ctx: AgentContext;
  readonly #signal: AbortSignal;
  readonly #groups = new Set<string>();
  readonly #loops: Promise<void>[] = [];

  constructor(ctx: AgentContext, signal: AbortSignal) {
    this.#ctx = ctx;
    this.#signal = signal;
  }

  /** Puts a newly opened relationship on the schedule (its group's loop, if it has a group). */
  watch(p: PrimaryReplication): void {
    const group = p.record.replicationGroup;
    if (!group) this.#loops.push(this.#runSchedule(p));
    else if (!this.#groups.has(group)) {
      this.#groups.add(group);
      this.#loops.push(this.#runGroupSchedule(group));
    }
  }

  /** Resolves once every loop has seen the abort. */
  async stopped(): Promise<void> {
    await Promise.allSettled(this.#loops);
  }

  /** The level-triggered shipping loop of one relationship: a cycle each period, or at the retry time after a failure. */
  async #runSchedule(p: PrimaryReplication): Promise<void> {
    const { clock, primaries } = this.#ctx;
    let last = clock.now();
    while (!this.#signal.aborted && primaries.get(p.id) === p) {
      const due = p.nextRetryAt ?? last + p.frequencyMs;
      try {
        await clock.sleep(Math.max(0, due - clock.now()), this.#signal);
      } catch {
        return;
      }
      if (this.#signal.aborted || primaries.get(p.id) !== p) return;
      last = clock.now();
      await p.cycle().catch(() => {}); // recorded by the relationship (retry schedule, health)
    }
  }

  async #runGroupSchedule(group: string): Promise<void> {
    const { clock } = this.#ctx;
    let last = clock.now();
    while (!this.#signal.aborted) {
      const members = groupMembers(this.#ctx, group);
      if (!members.length) return;
      const period = Math.min(...members.map((m) => m.frequencyMs));
      const retry = members.map((m) => m.nextRetryAt).filter((t): t is number => t !== undefined);
      const due = retry.length ? Math.min(...retry) : last + period;
      try {
        await clock.sleep(Math.max(0, due - clock.now()), this.#signal);
      } catch {
        return;
      }
      last = clock.now();
      await cycleGroup(this.#ctx, group).catch(() => {});
    }
  }
}

function groupMembers(ctx: AgentContext, group: string): PrimaryReplication[] {
  return [...ctx.primaries.values()].filter((p) => p.record.replicationGroup === group).sort((x, y) => (x.id < y.id ? -1 : 1));
}

/**
 * One cycle of a multi-VM consistency group: every member's disks are cut at one instant under
 * one cutId, then each member seals and ships its part. Members that cannot use their part
 * (initial copy, resync, suspended) give it back, so its blocks ship in a later group cut.
 */
export async function cycleGroup(ctx: AgentContext, group: string): Promise<GroupCycleResult> {
  const members = groupMembers(ctx, group);
  const ready = members.filter((m) => m.state === 'Replicating');
  const out: GroupCycleResult = {};
  if (ready.length) {
    const cut = await cutGroup(
      ready.map((m) => ({ vm: m.record.vm, disks: (m.source.tracked ?? []) as TrackedDisk[] })),
      { cutId: randomUUID(), time: ctx.clock.now() },
    );
    for (const m of ready) (m.source as GroupMemberSource).stage(cut.vms.get(m.record.vm)!);
  }
  for (const m of members) {
    try {
      out[m.id] = await m.cycle({ force: true });
    } catch (e) {
      out[m.id] = { error: e };
    } finally {
      await (m.source as GroupMemberSource).unstage();
    }
  }
  return out;
}

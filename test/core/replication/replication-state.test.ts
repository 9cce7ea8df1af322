// The replication state machine, table-driven: every case has a reason, and refusals leave the
// state unchanged.
import { describe, it, expect } from 'vitest';
import { transition, allowedEvents, STATES, EVENTS, isState, STATE_GROUPS, inGroup, accepts, replicaTransition } from '../../../src/core/replication/replication-state.ts';
import type { State, ReplicationEvent } from '../../../src/core/replication/replication-state.ts';
import { TerminalError } from '../../../src/model/errors.ts';

interface Case {
  reason: string;
  from: State;
  event: ReplicationEvent;
  to?: State; // undefined: refused
}

const cases: Case[] = [
  { reason: 'enabling protection waits for the initial copy', from: 'Disabled', event: 'enable', to: 'ReadyForInitialReplication' },
  { reason: 'network initial copy starts', from: 'ReadyForInitialReplication', event: 'startInitial', to: 'InitialReplicationInProgress' },
  { reason: 'external media: replica waits for the import', from: 'ReadyForInitialReplication', event: 'waitImport', to: 'WaitingForInitialReplicationImport' },
  { reason: 'initial copy complete', from: 'InitialReplicationInProgress', event: 'initialDone', to: 'Replicating' },
  { reason: 'a replica side completes its initial copy with its first applied point', from: 'ReadyForInitialReplication', event: 'initialDone', to: 'Replicating' },
  { reason: 'an operator asks for a resync while replicating', from: 'Replicating', event: 'resyncRequested', to: 'ResynchronizationRequired' },
  { reason: 'an operator asks for a resync while paused', from: 'Suspended', event: 'resyncRequested', to: 'ResynchronizationRequired' },
  { reason: 'a resync cannot be requested during the initial copy', from: 'InitialReplicationInProgress', event: 'resyncRequested' },
  { reason: 'media imported on the replica', from: 'WaitingForInitialReplicationImport', event: 'imported', to: 'Replicating' },
  { reason: 'initial copy can be paused', from: 'InitialReplicationInProgress', event: 'suspend', to: 'Suspended' },
  { reason: 'pause', from: 'Replicating', event: 'suspend', to: 'Suspended' },
  { reason: 'resume after pause', from: 'Suspended', event: 'resume', to: 'Replicating' },
  { reason: 'kill -9 of the tracker: changes may be missing', from: 'Replicating', event: 'trackerLost', to: 'ResynchronizationRequired' },
  { reason: 'tracker lost during the initial copy: compare what arrived', from: 'InitialReplicationInProgress', event: 'trackerLost', to: 'ResynchronizationRequired' },
  { reason: 'tracker lost while paused', from: 'Suspended', event: 'trackerLost', to: 'ResynchronizationRequired' },
  { reason: 'tracker lost while waiting for media import', from: 'WaitingForInitialReplicationImport', event: 'trackerLost', to: 'ResynchronizationRequired' },
  { reason: 'tracker lost mid-resync restarts it', from: 'Resynchronizing', event: 'trackerLost', to: 'ResynchronizationRequired' },
  { reason: 'pending log past 50% of the disk', from: 'Replicating', event: 'thresholdExceeded', to: 'ResynchronizationRequired' },
  { reason: 'paused too long: pending past the threshold', from: 'Suspended', event: 'thresholdExceeded', to: 'ResynchronizationRequired' },
  { reason: 'scheduled resync in the window', from: 'ResynchronizationRequired', event: 'resync', to: 'Resynchronizing' },
  { reason: 'manual resync on demand', from: 'Replicating', event: 'resync', to: 'Resynchronizing' },
  { reason: 'resync finished: deltas resume', from: 'Resynchronizing', event: 'resyncDone', to: 'Replicating' },
  { reason: 'planned failover: primary shipped its final delta', from: 'Replicating', event: 'plannedFailoverPrepared', to: 'PreparedForPlannedFailover' },
  { reason: 'failover on the replica', from: 'Replicating', event: 'failover', to: 'FailoverWaitingCompletion' },
  { reason: 'failover while paused (primary lost)', from: 'Suspended', event: 'failover', to: 'FailoverWaitingCompletion' },
  { reason: 'disaster while a resync is pending: retained points still usable', from: 'ResynchronizationRequired', event: 'failover', to: 'FailoverWaitingCompletion' },
  { reason: 'disaster during resync', from: 'Resynchronizing', event: 'failover', to: 'FailoverWaitingCompletion' },
  { reason: 'commit discards the other points', from: 'FailoverWaitingCompletion', event: 'commit', to: 'FailedOver' },
  { reason: 'cancel failover: back to replicating', from: 'FailoverWaitingCompletion', event: 'cancel', to: 'Replicating' },
  { reason: 'cancel a prepared planned failover on the primary', from: 'PreparedForPlannedFailover', event: 'cancel', to: 'Replicating' },
  { reason: 'reverse after planned failover: nothing lost', from: 'PreparedForPlannedFailover', event: 'reverse', to: 'Replicating' },
  { reason: 'reverse after committed failover: sides may diverge, resync', from: 'FailedOver', event: 'reverse', to: 'Resynchronizing' },
  { reason: 'non-recoverable error', from: 'Replicating', event: 'terminalError', to: 'Critical' },
  { reason: 'non-recoverable during initial copy', from: 'InitialReplicationInProgress', event: 'terminalError', to: 'Critical' },
  { reason: 'another terminal error while critical stays critical', from: 'Critical', event: 'terminalError', to: 'Critical' },
  { reason: 'operator fixed the cause: prove the replica by resync', from: 'Critical', event: 'operatorReset', to: 'ResynchronizationRequired' },
  { reason: 'remove replication', from: 'Replicating', event: 'remove', to: 'Disabled' },
  { reason: 'remove after failover', from: 'FailedOver', event: 'remove', to: 'Disabled' },
  { reason: 'remove while critical', from: 'Critical', event: 'remove', to: 'Disabled' },
  // Refusals.
  { reason: 'cannot replicate before enabling', from: 'Disabled', event: 'startInitial' },
  { reason: 'cannot remove what is not enabled', from: 'Disabled', event: 'remove' },
  { reason: 'initial copy cannot be done twice', from: 'Replicating', event: 'initialDone' },
  { reason: 'resume needs a pause', from: 'Replicating', event: 'resume' },
  { reason: 'critical is not cleared by resume, only by an operator reset', from: 'Critical', event: 'resume' },
  { reason: 'suspending a pending resync would let resume skip it', from: 'ResynchronizationRequired', event: 'suspend' },
  { reason: 'resume does not skip a pending resync', from: 'ResynchronizationRequired', event: 'resume' },
  { reason: 'commit needs a failover first', from: 'Replicating', event: 'commit' },
  { reason: 'a committed failover cannot be cancelled', from: 'FailedOver', event: 'cancel' },
  { reason: 'reverse before commit is refused', from: 'FailoverWaitingCompletion', event: 'reverse' },
  { reason: 'no failover while the replica has no first point', from: 'InitialReplicationInProgress', event: 'failover' },
  { reason: 'no failover before the media import', from: 'WaitingForInitialReplicationImport', event: 'failover' },
  { reason: 'resyncDone without a resync', from: 'Replicating', event: 'resyncDone' },
  { reason: 'operatorReset only from critical', from: 'Replicating', event: 'operatorReset' },
  { reason: 'a paused relationship must resume before resync', from: 'Suspended', event: 'resync' },
  { reason: 'failover twice', from: 'FailoverWaitingCompletion', event: 'failover' },
  { reason: 'import without waiting for it', from: 'ReadyForInitialReplication', event: 'imported' },
];

describe('replication state machine', () => {
  for (const c of cases) {
    it(`${c.from} --${c.event}--> ${c.to ?? 'refused'}: ${c.reason}`, () => {
      const state: State = c.from;
      if (c.to) {
        expect(transition(state, c.event)).toBe(c.to);
      } else {
        let err: unknown;
        try {
          transition(state, c.event);
        } catch (e) {
          err = e;
        }
        expect(TerminalError.is(err)).toBe(true);
        expect((err as TerminalError).code).toBe('invalid-state');
        expect((err as Error).message).toBe(`cannot ${c.event} while ${c.from}`);
        expect(state).toBe(c.from); // nothing changed
        expect(allowedEvents(state)).not.toContain(c.event);
      }
    });
  }

  it('every state is reachable from Disabled and every non-Disabled state can be removed', () => {
    const seen = new Set<State>(['Disabled']);
    const queue: State[] = ['Disabled'];
    while (queue.length) {
      const s = queue.shift()!;
      for (const e of allowedEvents(s)) {
        const next = transition(s, e);
        if (!seen.has(next)) {
          seen.add(next);
          queue.push(next);
        }
      }
    }
    expect([...seen].sort()).toEqual([...STATES].sort());
    for (const s of STATES) if (s !== 'Disabled') expect(transition(s, 'remove')).toBe('Disabled');
    for (const s of STATES) if (s !== 'Disabled') expect(transition(s, 'terminalError')).toBe('Critical');
    expect(EVENTS).toContain('operatorReset');
    expect(isState('Replicating')).toBe(true);
    expect(isState('replicating')).toBe(false);
  });
});

// The failover family and the other operator verbs as the agent runs them: each goes through the
// table, so each is refused in every state the table does not list it for (commit while
// Replicating, cancel after commit, reverse before failover, ...), with the same typed error.
describe('every verb is refused by the table where it is illegal', () => {
  const verbs: ReplicationEvent[] = ['failover', 'commit', 'cancel', 'reverse', 'plannedFailoverPrepared', 'suspend', 'resume', 'resync', 'resyncRequested', 'startInitial', 'waitImport', 'imported', 'initialDone', 'operatorReset', 'enable'];
  for (const verb of verbs) {
    it(`${verb}: refused in every state without a row for it`, () => {
      const illegal = STATES.filter((s) => !allowedEvents(s).includes(verb));
      expect(illegal.length).toBeGreaterThan(0);
      for (const s of illegal) {
        const err = (() => { try { transition(s, verb); } catch (e) { return e; } })();
        expect(TerminalError.is(err) && err.code, `${verb} while ${s}`).toBe('invalid-state');
        expect((err as Error).message).toBe(`cannot ${verb} while ${s}`);
      }
    });
  }
  it('commit while Replicating, the example of the issue, is refused', () => {
    expect(() => transition('Replicating', 'commit')).toThrow('cannot commit while Replicating');
  });
});

describe('the replica side moves through the same table', () => {
  it('accepts its own moves and refuses a move to a state a replica never takes', () => {
    expect(replicaTransition('ReadyForInitialReplication', 'initialDone')).toBe('Replicating');
    expect(replicaTransition('WaitingForInitialReplicationImport', 'imported')).toBe('Replicating');
    expect(replicaTransition('Replicating', 'failover')).toBe('FailoverWaitingCompletion');
    expect(replicaTransition('FailoverWaitingCompletion', 'commit')).toBe('FailedOver');
    expect(replicaTransition('FailoverWaitingCompletion', 'cancel')).toBe('Replicating');
    expect(() => replicaTransition('Replicating', 'commit')).toThrow('cannot commit while Replicating');
    expect(() => replicaTransition('FailedOver', 'cancel')).toThrow('cannot cancel while FailedOver');
    // Legal for a primary (suspend), but a replica is never Suspended: refused with a typed error.
    const err = (() => { try { replicaTransition('Replicating', 'suspend'); } catch (e) { return e; } })();
    expect(TerminalError.is(err) && err.code).toBe('invalid-state');
    expect((err as Error).message).toBe('cannot suspend a replica while Replicating');
  });
});

describe('state groups', () => {
  it('initial, steady, resync, failover and critical cover every state but Disabled, each once', () => {
    const main = ['initial', 'steady', 'resync', 'failover', 'critical'] as const;
    const listed = main.flatMap((g) => [...STATE_GROUPS[g]]);
    expect(new Set(listed).size).toBe(listed.length);
    expect([...listed, 'Disabled'].sort()).toEqual([...STATES].sort());
  });
  it('the narrower groups are subsets, and inGroup reads unknown or absent states as in none', () => {
    for (const s of STATE_GROUPS.failedOver) expect(inGroup(s, 'failover')).toBe(true);
    for (const s of STATE_GROUPS.replicaSide) expect(isState(s)).toBe(true);
    expect(inGroup('Resynchronizing', 'steady', 'resync')).toBe(true);
    expect(inGroup('Critical', 'steady', 'resync')).toBe(false);
    expect(inGroup(undefined, 'failedOver')).toBe(false);
    expect(inGroup('Unknown', 'critical')).toBe(false);
  });
  it('accepts answers as the table does, without a transition', () => {
    expect(accepts('Replicating', 'trackerLost')).toBe(true);
    expect(accepts('ReadyForInitialReplication', 'trackerLost')).toBe(false);
    expect(accepts('FailedOver', 'commit')).toBe(false);
  });
});

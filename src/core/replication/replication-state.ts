// The replication state machine of Hyper-V Replica / Site Recovery (DESIGN.md section 3) as a
// pure transition table: every allowed (state, event) pair is listed; anything else is refused.
import { TerminalError } from '../../model/errors.ts';
import { REPLICATION_STATES, type ReplicationState } from '../../model/observed.ts';

// The states themselves are the model's (the observed state the planner reads uses the same list).
export const STATES = REPLICATION_STATES;
export type State = ReplicationState;

export const EVENTS = [
  /** Protection enabled. */
  'enable',
  /** Initial copy over the network (or from an existing replica) starts. */
  'startInitial',
  'initialDone',
  /** Initial copy exported to external media; the replica waits for the import. */
  'waitImport',
  'imported',
  'suspend',
  'resume',
  /** The tracker lost continuity (crash, damaged state): changes may be missing. */
  'trackerLost',
  /** Pending changes passed the policy's resync threshold. */
  'thresholdExceeded',
  /** An operator asked for a resynchronisation. */
  'resyncRequested',
  /** Resynchronisation starts (in the window, or on demand). */
  'resync',
  'resyncDone',
  /** Primary side of a planned failover: final delta shipped, primary VM off. */
  'plannedFailoverPrepared',
  /** Replica side: failover to a recovery point (planned or unplanned). */
  'failover',
  'commit',
  'cancel',
  'reverse',
  /** A non-recoverable error (broken chain, authentication, VM not found...). */
  'terminalError',
  'operatorReset',
  'remove',
] as const;
export type ReplicationEvent = (typeof EVENTS)[number];

type Row = Partial<Record<ReplicationEvent, State>>;

/**
 * Decisions behind the less obvious rows:
 * - Continuity lost or threshold passed always leads to ResynchronizationRequired (a checksum
 *   compare repairs any replica content, even a half-done initial copy).
 * - Suspend is allowed only from steady or initial states; suspending a pending resync would let
 *   resume skip it.
 * - Failover stays possible while resync is pending or running: in a disaster the replica's
 *   retained recovery points are still usable.
 * - operatorReset after Critical goes to ResynchronizationRequired: after an unknown failure
 *   only a full compare proves the replica matches.
 * - A replica side starts ReadyForInitialReplication and its first applied point is the end of
 *   the initial copy (initialDone), without an InitialReplicationInProgress of its own.
 * - reverse after a committed unplanned failover resynchronises (the sides may have diverged);
 *   after a planned failover nothing was lost, so replication resumes directly.
 */
const TABLE: Record<State, Row> = {
  Disabled: { enable: 'ReadyForInitialReplication' },
  ReadyForInitialReplication: {
    startInitial: 'InitialReplicationInProgress',
    initialDone: 'Replicating',
    waitImport: 'WaitingForInitialReplicationImport',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  InitialReplicationInProgress: {
    initialDone: 'Replicating',
    suspend: 'Suspended',
    trackerLost: 'ResynchronizationRequired',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  WaitingForInitialReplicationImport: {
    imported: 'Replicating',
    trackerLost: 'ResynchronizationRequired',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  Replicating: {
    suspend: 'Suspended',
    trackerLost: 'ResynchronizationRequired',
    thresholdExceeded: 'ResynchronizationRequired',
    resyncRequested: 'ResynchronizationRequired',
    resync: 'Resynchronizing',
    plannedFailoverPrepared: 'PreparedForPlannedFailover',
    failover: 'FailoverWaitingCompletion',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  Suspended: {
    resume: 'Replicating',
    trackerLost: 'ResynchronizationRequired',
    thresholdExceeded: 'ResynchronizationRequired',
    resyncRequested: 'ResynchronizationRequired',
    failover: 'FailoverWaitingCompletion',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  ResynchronizationRequired: {
    resync: 'Resynchronizing',
    failover: 'FailoverWaitingCompletion',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  Resynchronizing: {
    resyncDone: 'Replicating',
    trackerLost: 'ResynchronizationRequired',
    failover: 'FailoverWaitingCompletion',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  PreparedForPlannedFailover: {
    reverse: 'Replicating',
    cancel: 'Replicating',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  FailoverWaitingCompletion: {
    commit: 'FailedOver',
    cancel: 'Replicating',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  FailedOver: {
    reverse: 'Resynchronizing',
    terminalError: 'Critical',
    remove: 'Disabled',
  },
  Critical: {
    terminalError: 'Critical',
    operatorReset: 'ResynchronizationRequired',
    remove: 'Disabled',
  },
};

/** The state after `event`, or TerminalError('invalid-state', "cannot <event> while <state>"). */
export function transition(state: State, event: ReplicationEvent): State {
  const row = TABLE[state];
  if (!row) throw new TerminalError('invalid-argument', `unknown replication state ${JSON.stringify(state)}`);
  const next = row[event];
  if (!next) throw new TerminalError('invalid-state', `cannot ${event} while ${state}`);
  return next;
}

/** Events accepted in `state`, in EVENTS order (for CLIs and error hints). */
export function allowedEvents(state: State): ReplicationEvent[] {
  return EVENTS.filter((e) => TABLE[state]?.[e] !== undefined);
}

/** Whether `state` accepts `event` (the table's answer, without a transition). */
export function accepts(state: State, event: ReplicationEvent): boolean {
  return TABLE[state]?.[event] !== undefined;
}

/**
 * The states callers ask about as a family, in one place (so a new state is placed once):
 * - initial: no complete copy on the replica yet;
 * - steady: replicating, or paused by an operator;
 * - resync: the replica must be (or is being) compared and repaired;
 * - failover: a failover is prepared, waiting for completion or committed;
 * - failedOver: the replica side ran a failover (replication into it stopped);
 * - critical: stopped on a non-recoverable error;
 * - replicaSide: the states a Replica server's side takes (it never copies, resyncs or prepares:
 *   the primary drives those).
 */
export const STATE_GROUPS = {
  initial: ['ReadyForInitialReplication', 'InitialReplicationInProgress', 'WaitingForInitialReplicationImport'],
  steady: ['Replicating', 'Suspended'],
  resync: ['ResynchronizationRequired', 'Resynchronizing'],
  failover: ['PreparedForPlannedFailover', 'FailoverWaitingCompletion', 'FailedOver'],
  failedOver: ['FailoverWaitingCompletion', 'FailedOver'],
  critical: ['Critical'],
  replicaSide: ['ReadyForInitialReplication', 'WaitingForInitialReplicationImport', 'Replicating', 'FailoverWaitingCompletion', 'FailedOver'],
} as const satisfies Record<string, readonly State[]>;
export type StateGroup = keyof typeof STATE_GROUPS;

/** The states a Replica server's side of a relationship takes. */
export type ReplicaSideState = (typeof STATE_GROUPS.replicaSide)[number];

/** The replica side's move through the one transition table; a state the replica never takes is refused too. */
export function replicaTransition(state: ReplicaSideState, event: ReplicationEvent): ReplicaSideState {
  const next = transition(state, event);
  if (!inGroup(next, 'replicaSide')) throw new TerminalError('invalid-state', `cannot ${event} a replica while ${state}`);
  return next as ReplicaSideState;
}

/** Whether `state` (as a site reported it, possibly unknown or absent) is in any of `groups`. */
export function inGroup(state: string | undefined, ...groups: StateGroup[]): boolean {
  return state !== undefined && groups.some((g) => (STATE_GROUPS[g] as readonly string[]).includes(state));
}

export function isState(value: unknown): value is State {
  return typeof value === 'string' && (STATES as readonly string[]).includes(value);
}

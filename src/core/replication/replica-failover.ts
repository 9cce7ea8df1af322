// The failover verbs on the Replica server's side of one relationship: test failover, failover
// (planned or unplanned) to a point, commit, cancel and reverse. The engine decides what is legal
// (the transition table, before anything is created) and records the outcome; the host's VM
// plumbing (creating, powering and removing the recovered VM) is the RecoveryVms port's.
import { TerminalError } from '../../model/errors.ts';
import type { RecoveryPointSelector } from '../../model/replication-api.ts';
import type { RecoveryPoint } from '../replica/recovery-points.ts';
import { inGroup, replicaTransition, transition } from './replication-state.ts';
import type { ReplicaReplication } from './replica.ts';

/** What a failover verb asks of the host that holds the replica (agent/ implements it). */
export interface RecoveryVms {
  /** Starts `name` on throw-away overlays of the point `selector` names; replication continues. */
  startTest(name: string, selector: RecoveryPointSelector | undefined): Promise<TestVm>;
  removeTest(vm: string): Promise<void>;
  /**
   * Starts the failed-over VM on the point `selector` names. `previous` is the VM of a failover
   * not committed yet (the same call again changes the point): it goes first.
   */
  startFailover(selector: RecoveryPointSelector | undefined, previous: string | undefined): Promise<FailoverStarted>;
  /** Cancel: the failed-over VM goes (replication into the replica resumes). */
  stopFailover(vm: string): Promise<void>;
  /** Commit, first half: the failed-over VM's disks become its own; after it the VM reads nothing of the chain. */
  detachFromChain(vm: string): Promise<void>;
  /** Commit, second half, once the chain is discarded. */
  committed(vm: string): Promise<void>;
  /** Reverse: a relationship from this host replicating the failed-over VM back; the host forgets this replica. */
  replicateBack(vm: string): Promise<void>;
}

export interface TestVm {
  point: RecoveryPoint;
  /** Where the test VM's disks are served. */
  nbdSocket: string;
}
export type TestFailoverStarted = TestVm & { vm: string };
export interface FailoverStarted {
  vm: string;
  point: RecoveryPoint;
}

/** Test failover: `<vm>-Test` from a chosen point; the replica keeps replicating. */
export async function testFailover(rep: ReplicaReplication, vms: RecoveryVms, selector: RecoveryPointSelector | undefined): Promise<TestFailoverStarted> {
  const { vm, testFailover: active, committed } = rep.record;
  if (active) throw new TerminalError('invalid-state', `a test failover of ${vm} is already active (${active.vm}); clean it up first`);
  if (committed) throw new TerminalError('invalid-state', `replica of ${vm} was committed after a failover: no recovery points left to test`);
  rep.resolvePoint(selector); // refused here, before anything is created, when it names no point
  const name = `${vm}-Test`;
  const started = await vms.startTest(name, selector);
  await rep.update((r) => {
    r.testFailover = { vm: name, sequence: started.point.sequence };
  });
  return { vm: name, ...started };
}

/** Removes the active test VM; resolves with its name. */
export async function cleanupTestFailover(rep: ReplicaReplication, vms: RecoveryVms): Promise<string> {
  const active = rep.record.testFailover;
  if (!active) throw new TerminalError('invalid-state', `no test failover of ${rep.record.vm} is active`);
  await vms.removeTest(active.vm);
  await rep.update((r) => {
    delete r.testFailover;
  });
  return active.vm;
}

/** Failover (planned or unplanned) to a point; the same call again before commit changes the point. */
export async function failover(rep: ReplicaReplication, vms: RecoveryVms, selector: RecoveryPointSelector | undefined): Promise<FailoverStarted> {
  const { state, vm } = rep.record;
  if (inGroup(state, 'initial')) throw new TerminalError('invalid-state', `replica of ${vm} has no complete copy yet (${state})`);
  if (state === 'FailedOver') throw new TerminalError('invalid-state', `replica of ${vm} is already failed over and committed`);
  const changePoint = state === 'FailoverWaitingCompletion';
  if (!changePoint) replicaTransition(state, 'failover'); // refused here, before anything is created, when illegal
  rep.resolvePoint(selector); // refused before the current failover VM is dropped
  const started = await vms.startFailover(selector, rep.record.failover?.vm);
  const record = (r: ReplicaReplication['record']) => {
    r.failover = { vm: started.vm, sequence: started.point.sequence };
  };
  await (changePoint ? rep.update(record) : rep.move('failover', record));
  return started;
}

/** Commit: the failed-over VM gets standalone disks; the recovery points and the chain are discarded. */
export async function commit(rep: ReplicaReplication, vms: RecoveryVms): Promise<void> {
  const active = rep.waitingFailover;
  if (!active) throw new TerminalError('invalid-state', `cannot commit ${rep.record.vm}: no failover is waiting for completion (${rep.record.state})`);
  replicaTransition(rep.record.state, 'commit');
  await vms.detachFromChain(active.vm);
  await rep.store.removeAll();
  await rep.move('commit', (r) => {
    r.committed = true;
  });
  await vms.committed(active.vm);
}

/** Cancel: the failed-over VM is discarded and replication into the replica resumes. */
export async function cancel(rep: ReplicaReplication, vms: RecoveryVms): Promise<void> {
  const active = rep.waitingFailover;
  if (!active) throw new TerminalError('invalid-state', `cannot cancel ${rep.record.vm}: no failover is waiting for completion (${rep.record.state})`);
  replicaTransition(rep.record.state, 'cancel');
  await vms.stopFailover(active.vm);
  await rep.move('cancel', (r) => {
    delete r.failover;
  });
}

/**
 * Reverse replication from this host (which runs the failed-over VM) back to the former primary; a
 * failover still waiting is committed first. The replica itself ends here: the reverse relationship
 * is a new one with this host as its primary, so the table is asked (reverse is a primary's move,
 * not a state this replica takes) and the replica removed.
 */
export async function reverse(rep: ReplicaReplication, vms: RecoveryVms): Promise<void> {
  if (rep.record.state === 'FailoverWaitingCompletion') await commit(rep, vms);
  const { state, vm } = rep.record;
  if (state !== 'FailedOver') throw new TerminalError('invalid-state', `cannot reverse ${vm}: it is not failed over (${state})`);
  transition(state, 'reverse'); // refused here, before anything is created, when illegal
  await vms.replicateBack(vm);
  await rep.remove();
}

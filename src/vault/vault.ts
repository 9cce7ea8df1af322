// The vault: drsite's durable control-plane state (desired generations, observed status, jobs,
// events, last actions, pending marks), in one SQLite file or, for several controllers, in etcd
// (etcd.ts). Safe to open from several processes at once; every multi-row change is one
// transaction.

import { systemClock, type Clock } from '../model/clock.ts';
import { TerminalError } from '../model/errors.ts';
import * as actions from './actions.ts';
import type { Condition, ConditionInput, ResourceStatus } from './conditions.ts';
import * as events from './events.ts';
import * as jobs from './jobs.ts';
import * as leases from './leases.ts';
import * as meta from './meta.ts';
import { migrate, schemaVersion } from './migrations.ts';
import * as pending from './pending.ts';
import * as resources from './resources.ts';
import { EtcdConnection, isEtcdUrl } from './etcd.ts';
import { Connection } from './sqlite.ts';

export type { Condition, ConditionInput, ConditionStatus, ResourceStatus } from './conditions.ts';
export { mergeCondition } from './conditions.ts';
export type { DesiredResource, StoredStatus } from './resources.ts';
export { JOB_TYPES, JOB_STATES, STEP_STATES } from './jobs.ts';
export type { JobType, JobState, FinalJobState, StepState, FinalStepState, Job, JobSummary, JobStep, JobError, NewJob, JobQuery, StepEnd } from './jobs.ts';
export type { EventType, NewEvent, VaultEvent, EventQuery } from './events.ts';
export type { ActionRecord, LastAction } from './actions.ts';
export type { PendingMark } from './pending.ts';
export type { Lease, LeaseHolder, TakeResult } from './leases.ts';
export { MIGRATIONS, SCHEMA_VERSION } from './migrations.ts';
export type { Migration } from './migrations.ts';

export const DEFAULT_VAULT_PATH = '.drsite/vault.db';

export interface VaultOptions {
  /** Source of every stored time. @default systemClock */
  readonly clock?: Clock;
  /** How long to wait for another process's write lock before RetryableError('busy'). @default 5000 */
  readonly busyTimeoutMs?: number;
  /** Events kept; older ones are pruned as new ones arrive. @default 10000 */
  readonly maxEvents?: number;
}

export class Vault {
  private readonly conn: Connection;
  private readonly clock: Clock;
  private readonly maxEvents: number;

  private constructor(conn: Connection, clock: Clock, maxEvents: number) {
    this.conn = conn;
    this.clock = clock;
    this.maxEvents = maxEvents;
  }

  /**
   * Opens (creating it and its parent directories if needed) and migrates the vault at `path`
   * (`:memory:` for a private in-memory one). A vault written by a newer drsite, or a file that
   * is not a vault, is refused with TerminalError('invalid-state'). `etcd://host:port,...[/prefix]`
   * opens the vault kept in that etcd cluster.
   */
  static open(path: string = DEFAULT_VAULT_PATH, options: VaultOptions = {}): Vault {
    const maxEvents = options.maxEvents ?? 10_000;
    if (!Number.isSafeInteger(maxEvents) || maxEvents < 1) throw new TerminalError('invalid-argument', `vault ${path}: maxEvents must be a positive integer, got ${maxEvents}`);
    const conn = isEtcdUrl(path) ? new EtcdConnection(path) : new Connection(path, { busyTimeoutMs: options.busyTimeoutMs ?? 5000 });
    const clock = options.clock ?? systemClock;
    try {
      // Created from nothing (every migration applied here): remember it until a pass has
      // compared the vault with the sites, which may already replicate (a rebuilt vault).
      const createdNew = conn instanceof EtcdConnection ? conn.createdNew : migrate(conn.db, path)[0] === 1;
      if (createdNew) meta.markCreatedEmpty(conn, clock.now());
    } catch (e) {
      conn.close();
      throw e;
    }
    return new Vault(conn, clock, maxEvents);
  }

  get path(): string {
    return this.conn.path;
  }

  /** The schema version of the open file (PRAGMA user_version). */
  get schemaVersion(): number {
    return schemaVersion(this.conn.db);
  }

  /**
   * Runs fn as one atomic unit across all vault methods called inside it (nested calls are
   * savepoints). fn must be synchronous; a thrown error rolls everything back and is rethrown.
   */
  transaction<T>(fn: () => T): T {
    return this.conn.transaction(fn);
  }

  get isOpen(): boolean {
    return this.conn.isOpen;
  }

  close(): void {
    this.conn.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // Desired state

  /** Stores the spec; the generation increments only when its canonical JSON changes. */
  recordDesired(kind: string, name: string, spec: unknown): { generation: number; changed: boolean } {
    return resources.recordDesired(this.conn, kind, name, spec, this.clock.now());
  }
  getDesired(kind: string, name: string): resources.DesiredResource | undefined {
    return resources.getDesired(this.conn, kind, name);
  }
  /** Ordered by kind, then name. Deleted resources are not listed. */
  listDesired(kind?: string): resources.DesiredResource[] {
    return resources.listDesired(this.conn, kind);
  }
  /** True if it existed. Status and last action are kept (the reconciler still has to clean up). */
  deleteDesired(kind: string, name: string): boolean {
    return resources.deleteDesired(this.conn, kind, name, this.clock.now());
  }

  // Observed status

  setStatus(kind: string, name: string, status: ResourceStatus): void {
    resources.setStatus(this.conn, kind, name, status, this.clock.now());
  }
  getStatus(kind: string, name: string): resources.StoredStatus | undefined {
    return resources.getStatus(this.conn, kind, name);
  }
  listStatus(kind?: string): resources.StoredStatus[] {
    return resources.listStatus(this.conn, kind);
  }
  deleteStatus(kind: string, name: string): boolean {
    return resources.deleteStatus(this.conn, kind, name);
  }
  /** Sets one condition, keeping lastTransitionTime unless status changed; returns it as stored. */
  setCondition(kind: string, name: string, cond: ConditionInput, now: number = this.clock.now()): Condition {
    return resources.setCondition(this.conn, kind, name, cond, now);
  }

  // Jobs

  createJob(job: jobs.NewJob): jobs.Job {
    return jobs.createJob(this.conn, job, this.clock.now());
  }
  startStep(jobId: string, name: string): jobs.JobStep {
    return jobs.startStep(this.conn, jobId, name, this.clock.now());
  }
  endStep(jobId: string, name: string, end: jobs.StepEnd): jobs.JobStep {
    return jobs.endStep(this.conn, jobId, name, end, this.clock.now());
  }
  setJobState(jobId: string, state: 'Running' | 'Waiting'): void {
    jobs.setJobState(this.conn, jobId, state);
  }
  /** `error` may be an Error (its message and code are kept), a string or {message, code?}. */
  finishJob(jobId: string, state: jobs.FinalJobState, error?: unknown): jobs.Job {
    return jobs.finishJob(this.conn, jobId, state, error, this.clock.now());
  }
  getJob(id: string): jobs.Job | undefined {
    return jobs.getJob(this.conn, id);
  }
  /** Newest first. */
  listJobs(query?: jobs.JobQuery): jobs.JobSummary[] {
    return jobs.listJobs(this.conn, query);
  }

  // Events

  recordEvent(event: events.NewEvent): events.VaultEvent {
    return events.recordEvent(this.conn, event, this.clock.now(), this.maxEvents);
  }
  /** Newest first. */
  listEvents(query: events.EventQuery): events.VaultEvent[] {
    return events.listEvents(this.conn, query);
  }

  // Last action per resource

  recordAction(kind: string, name: string, action: actions.ActionRecord): void {
    actions.recordAction(this.conn, kind, name, action, this.clock.now());
  }
  getLastAction(kind: string, name: string): actions.LastAction | undefined {
    return actions.getLastAction(this.conn, kind, name);
  }

  // Leases

  /**
   * Takes (or renews) `name` for holder unless another live holder has it; see leases.ts. In etcd
   * the lease is an etcd lease and only its expiry frees it: `isGone` (a pid check, meaningful on
   * one host only) is not consulted, as controllers sit on different hosts.
   */
  takeLease(name: string, holder: leases.LeaseHolder, ttlMs: number, isGone: (h: leases.Lease) => boolean): leases.TakeResult {
    if (this.conn instanceof EtcdConnection) return this.conn.takeLease(name, holder, ttlMs);
    return leases.takeLease(this.conn, name, holder, this.clock.now(), ttlMs, isGone);
  }
  /** False when the holder lost the lease (it expired and another process took it over). */
  renewLease(name: string, holder: leases.LeaseHolder, ttlMs: number): boolean {
    if (this.conn instanceof EtcdConnection) return this.conn.renewLease(name);
    return leases.renewLease(this.conn, name, holder, this.clock.now(), ttlMs);
  }
  releaseLease(name: string, holder: leases.LeaseHolder): boolean {
    if (this.conn instanceof EtcdConnection) return this.conn.releaseLease(name);
    return leases.releaseLease(this.conn, name, holder);
  }
  getLease(name: string): leases.Lease | undefined {
    if (this.conn instanceof EtcdConnection) return this.conn.getLease(name);
    return leases.getLease(this.conn, name);
  }
  /** Where the vault lives: a SQLite file or an etcd cluster. */
  get backend(): 'sqlite' | 'etcd' {
    return this.conn instanceof EtcdConnection ? 'etcd' : 'sqlite';
  }

  // Facts about the file

  /** Created empty by this drsite and not yet compared with the sites by a reconcile pass. */
  get createdEmpty(): boolean {
    return meta.isCreatedEmpty(this.conn);
  }
  clearCreatedEmpty(): void {
    meta.clearCreatedEmpty(this.conn);
  }

  // Pending marks

  /** Durable before it returns (synchronous=FULL). Throws invalid-state if `key` is already marked. */
  markPending(key: string, payload: unknown): pending.PendingMark {
    return pending.markPending(this.conn, key, payload, this.clock.now());
  }
  clearPending(key: string): boolean {
    return pending.clearPending(this.conn, key);
  }
  getPending(key: string): pending.PendingMark | undefined {
    return pending.getPending(this.conn, key);
  }
  /** Oldest first. */
  listPending(): pending.PendingMark[] {
    return pending.listPending(this.conn);
  }
}

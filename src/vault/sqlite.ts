// The one place that talks to node:sqlite: opening with the vault's pragmas, cached statements,
// transactions (nested through savepoints) and the mapping of SQLite failures to typed errors.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { RetryableError, TerminalError } from '../model/errors.ts';

export type Row = Record<string, unknown>;

// SQLite primary result codes (https://sqlite.org/rescode.html) we translate.
const SQLITE_BUSY = 5;
const SQLITE_LOCKED = 6;
const SQLITE_NOMEM = 7;
const SQLITE_CORRUPT = 11;
const SQLITE_FULL = 13;
const SQLITE_CANTOPEN = 14;
const SQLITE_NOTADB = 26;

export interface ConnectionOptions {
  /** How long a writer waits for another process's lock before giving up with RetryableError('busy'). */
  readonly busyTimeoutMs: number;
  /** What messages call this vault when `path` is not its name (an etcd vault's in-memory mirror). */
  readonly label?: string;
}

export class Connection {
  readonly path: string;
  readonly db: DatabaseSync;
  private readonly statements = new Map<string, StatementSync>();
  protected depth = 0;

  constructor(path: string, options: ConnectionOptions) {
    this.path = options.label ?? path;
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    try {
      this.db = new DatabaseSync(path, {
        enableForeignKeyConstraints: true,
        timeout: options.busyTimeoutMs,
      });
    } catch (e) {
      throw translate(e, path, 'open');
    }
    try {
      // Touch the file so a non-database is refused at open, not at the first query.
      this.db.prepare('SELECT count(*) FROM sqlite_master').get();
      // WAL lets readers (the CLI, `drsite jobs`) run while the reconciler writes.
      // synchronous=FULL rather than NORMAL: NORMAL under WAL stays consistent but may lose the
      // last commits on power loss, and a pending mark written before an external call is only
      // worth something if it is on disk before that call is made.
      this.db.exec('PRAGMA journal_mode = WAL');
      this.db.exec('PRAGMA synchronous = FULL');
      this.db.exec('PRAGMA foreign_keys = ON');
      // A file cut short or overwritten in the middle still opens: SQLite only notices a bad page
      // when a query reaches it, which could be halfway through a pass. quick_check reads every
      // page once (milliseconds for a vault) so damage is refused here, before anything acts.
      if (path !== ':memory:') {
        const problems = this.db.prepare('PRAGMA quick_check(3)').all().map((r) => String(Object.values(r)[0]));
        if (problems.length !== 1 || problems[0] !== 'ok') throw damaged(path, problems.join('; '));
      }
    } catch (e) {
      this.db.close();
      throw translate(e, path, 'open');
    }
  }

  private stmt(sql: string): StatementSync {
    if (!this.db.isOpen) throw new TerminalError('invalid-state', `vault ${this.path} is closed`);
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  get<T extends Row = Row>(sql: string, ...params: SQLInputValue[]): T | undefined {
    try {
      return this.stmt(sql).get(...params) as T | undefined;
    } catch (e) {
      throw translate(e, this.path, sql);
    }
  }

  all<T extends Row = Row>(sql: string, ...params: SQLInputValue[]): T[] {
    try {
      return this.stmt(sql).all(...params) as T[];
    } catch (e) {
      throw translate(e, this.path, sql);
    }
  }

  run(sql: string, ...params: SQLInputValue[]): { changes: number; lastInsertRowid: number } {
    try {
      const r = this.stmt(sql).run(...params);
      return { changes: Number(r.changes), lastInsertRowid: Number(r.lastInsertRowid) };
    } catch (e) {
      throw translate(e, this.path, sql);
    }
  }

  exec(sql: string): void {
    if (!this.db.isOpen) throw new TerminalError('invalid-state', `vault ${this.path} is closed`);
    try {
      this.db.exec(sql);
    } catch (e) {
      throw translate(e, this.path, sql);
    }
  }

  /**
   * Runs fn atomically. The outermost level takes the write lock up front (BEGIN IMMEDIATE):
   * a deferred transaction that reads and then writes can fail with BUSY without waiting, as its
   * snapshot may already be stale. Nested calls become savepoints. fn must be synchronous: the
   * connection is shared, so a transaction held open across an await would swallow unrelated writes.
   */
  transaction<T>(fn: () => T): T {
    return this.atomically('BEGIN IMMEDIATE', fn);
  }

  /** A consistent snapshot for several reads (WAL: never blocks and is never blocked by writers). */
  read<T>(fn: () => T): T {
    return this.depth > 0 ? fn() : this.atomically('BEGIN DEFERRED', fn);
  }

  protected atomically<T>(begin: string, fn: () => T): T {
    const level = this.depth;
    const savepoint = `vault_sp_${level}`;
    this.exec(level === 0 ? begin : `SAVEPOINT ${savepoint}`);
    this.depth++;
    let result: T;
    try {
      result = fn();
      if (isPromiseLike(result)) {
        throw new TerminalError('invalid-argument', `${this.path}: a vault transaction must be synchronous (fn returned a promise)`);
      }
    } catch (e) {
      this.depth--;
      try {
        this.db.exec(level === 0 ? 'ROLLBACK' : `ROLLBACK TO ${savepoint}; RELEASE ${savepoint}`);
      } catch {
        // The original failure is the one worth reporting; SQLite may already have rolled back
        // by itself (e.g. after SQLITE_FULL), which makes our ROLLBACK fail.
      }
      throw e;
    }
    this.depth--;
    this.exec(level === 0 ? 'COMMIT' : `RELEASE ${savepoint}`);
    return result;
  }

  get isOpen(): boolean {
    return this.db.isOpen;
  }

  close(): void {
    if (!this.db.isOpen) return;
    this.statements.clear();
    this.db.close();
  }
}

function isPromiseLike(v: unknown): boolean {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/** Maps a node:sqlite failure to our typed errors; anything already typed passes through. */
export function translate(e: unknown, path: string, where: string): unknown {
  if (TerminalError.is(e) || RetryableError.is(e)) return e;
  const errcode = (e as { errcode?: unknown } | null)?.errcode;
  if (typeof errcode !== 'number') return e;
  const primary = errcode & 0xff;
  const what = `vault ${path}: ${(e as Error).message} (during ${where.split('\n')[0].trim().slice(0, 80)})`;
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return new RetryableError('busy', what, { cause: e });
    case SQLITE_FULL:
      return new RetryableError('low-disk', what, { cause: e });
    case SQLITE_NOMEM:
      return new RetryableError('low-memory', what, { cause: e });
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return damaged(path, (e as Error).message, e);
    case SQLITE_CANTOPEN:
      return new TerminalError('not-found', what, { cause: e });
    default:
      return new TerminalError('invalid-state', what, { cause: e });
  }
}

/**
 * A vault SQLite cannot read. What the sites hold (relationships, replicas, recovery points) is
 * the truth the reconciler observes every pass, so a new, empty vault loses only history (jobs,
 * events) and the record of past failover ids, which a rebuilt vault adopts as done
 * (reconciler/rebuilt-vault.ts) instead of running them again.
 */
export function damaged(path: string, detail: string, cause?: unknown): TerminalError {
  const oneLine = detail.replace(/\s+/g, ' ').trim();
  return new TerminalError(
    'invalid-state',
    `vault ${path} is damaged (${oneLine}): move it aside, with its -wal and -shm files if any (e.g. mv ${path} ${path}.damaged); the next drsite apply rebuilds protection state from the sites (job and event history are lost)`,
    { cause },
  );
}

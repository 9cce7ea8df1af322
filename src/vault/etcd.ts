// The vault kept in etcd, for control planes that must survive the loss of a site: several
// controllers share one state through a cluster with a member per site.
//
// Every module of the vault runs unchanged: each process keeps an in-memory SQLite mirror with
// the vault's schema, and this connection keeps it in step with etcd.
// - Before a read or a transaction, the mirror catches up with etcd (one range read when
//   nothing changed; otherwise the changed rows and the key list, at one revision).
// - A transaction runs on the mirror while triggers note the rows it touches. Before it commits
//   locally, those rows go to etcd in one etcd transaction, which compares the vault's version
//   key with the version the mirror was at. So vault transactions are serializable across
//   processes, not only within one row.
// - A transaction that lost the race is rolled back, the mirror catches up, and it runs again
//   (fn only touches the vault, and a failed one left nothing behind).
// - While this process holds the reconcile lease, each commit also requires that lease to be
//   the one it took (a fence). A controller that stalled past its lease cannot record a step
//   after another one has taken over.
//
// Leases are etcd leases: a holder's key disappears when the holder stops renewing, whatever the
// clocks of the controllers say.
import { fileURLToPath } from 'node:url';
import { RetryableError, TerminalError } from '../model/errors.ts';
import { BlockingWorker } from './blocking-worker.ts';
import type { CommitResult, LeaseTake, LeaseValue, Synced } from './etcd-worker.ts';
import type { Lease, LeaseHolder, TakeResult } from './leases.ts';
import { migrate, SCHEMA_VERSION } from './migrations.ts';
import { Connection, type Row } from './sqlite.ts';
import type { SQLInputValue } from 'node:sqlite';
import { iso } from './values.ts';

const URL_SCHEME = 'etcd://';
const CALL_TIMEOUT_MS = 15_000;
const MAX_ATTEMPTS = 20;

export const isEtcdUrl = (s: string): boolean => s.startsWith(URL_SCHEME);

/** `etcd://h1:p1,h2:p2[/prefix]` → endpoints and key prefix (default `/drsite/`). */
export function parseEtcdUrl(url: string): { endpoints: string[]; prefix: string } {
  const rest = url.slice(URL_SCHEME.length);
  const slash = rest.indexOf('/');
  const hosts = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash).replace(/\/+$/, '');
  const endpoints = hosts.split(',').filter(Boolean);
  const bad = endpoints.find((e) => !/^[\w.-]+:\d{1,5}$|^\[[\da-f:]+\]:\d{1,5}$/i.test(e));
  if (!endpoints.length || bad !== undefined) {
    throw new TerminalError('invalid-argument', `--state ${url}: expected etcd://host:port[,host:port...][/prefix]${bad !== undefined ? `; ${JSON.stringify(bad)} is not host:port` : ''}`);
  }
  return { endpoints: endpoints.map((e) => `http://${e}`), prefix: `${path || '/drsite'}/` };
}

interface Table {
  readonly name: string;
  readonly columns: string[];
  readonly pk: string[];
}

class Conflict extends Error {}

export class EtcdConnection extends Connection {
  private readonly etcd: BlockingWorker;
  private readonly tables: Map<string, Table>;
  /** The version of the vault the mirror holds (the mod revision of the version key). */
  private rev = 0;
  /** Set while this process holds the reconcile lease: every commit is fenced by it. */
  private fence: { name: string; createRev: number } | undefined;
  /** True when this open created the vault in etcd. */
  readonly createdNew: boolean;

  constructor(url: string) {
    const { endpoints, prefix } = parseEtcdUrl(url);
    super(':memory:', { busyTimeoutMs: 0, label: url });
    migrate(this.db, url);
    this.tables = describeTables(this);
    this.captureChanges();
    this.etcd = new BlockingWorker(new URL('./etcd-worker.ts', import.meta.url), { endpoints, prefix }, `vault ${url}`);
    try {
      const opened = this.etcd.call<{ schema: number; created: boolean }>('open', { schemaVersion: SCHEMA_VERSION }, CALL_TIMEOUT_MS);
      if (opened.schema !== SCHEMA_VERSION) {
        throw new TerminalError(
          'invalid-state',
          opened.schema > SCHEMA_VERSION
            ? `vault ${url} has schema version ${opened.schema}, newer than this drsite supports (${SCHEMA_VERSION}); it was written by a newer drsite: upgrade drsite to open it`
            : `vault ${url} has schema version ${opened.schema}; this drsite keeps version ${SCHEMA_VERSION} in etcd and cannot migrate an older one`,
        );
      }
      this.createdNew = opened.created;
      this.sync();
    } catch (e) {
      this.close();
      throw e;
    }
  }

  override transaction<T>(fn: () => T): T {
    if (this.depth > 0) return super.transaction(fn);
    for (let attempt = 1; ; attempt++) {
      this.sync();
      try {
        return this.atomically('BEGIN IMMEDIATE', () => {
          const result = fn();
          this.push();
          return result;
        });
      } catch (e) {
        if (!(e instanceof Conflict)) throw e;
        if (attempt >= MAX_ATTEMPTS) throw new RetryableError('busy', `vault ${this.path}: ${MAX_ATTEMPTS} attempts in a row lost to other writers`);
      }
    }
  }

  override read<T>(fn: () => T): T {
    if (this.depth === 0) this.sync();
    return super.read(fn);
  }

  override get<T extends Row = Row>(sql: string, ...params: SQLInputValue[]): T | undefined {
    if (this.depth === 0) this.sync();
    return super.get<T>(sql, ...params);
  }

  override all<T extends Row = Row>(sql: string, ...params: SQLInputValue[]): T[] {
    if (this.depth === 0) this.sync();
    return super.all<T>(sql, ...params);
  }

  override run(sql: string, ...params: SQLInputValue[]): { changes: number; lastInsertRowid: number } {
    if (this.depth === 0) return this.transaction(() => super.run(sql, ...params));
    return super.run(sql, ...params);
  }

  override close(): void {
    if (!this.isOpen) return;
    try {
      this.etcd?.call('close', {}, 3000);
    } catch {
      // Closing anyway: leases left behind expire by themselves.
    }
    this.etcd?.terminate();
    super.close();
  }

  // Leases (etcd leases, see the header)

  takeLease(name: string, holder: LeaseHolder, ttlMs: number): TakeResult {
    const acquiredAt = Date.now();
    const r = this.etcd.call<LeaseTake>('leaseTake', { name, holder: { ...holder, acquiredAt } satisfies LeaseValue, ttlMs }, CALL_TIMEOUT_MS);
    if (!r.taken) return { taken: false, holder: toLease(name, r.holder, r.ttlLeftMs) };
    if (name === 'reconcile') this.fence = { name, createRev: r.createRev };
    const lease = toLease(name, { ...holder, acquiredAt }, ttlMs);
    return r.tookOverFrom ? { taken: true, lease, tookOverFrom: toLease(name, r.tookOverFrom, 0) } : { taken: true, lease };
  }

  renewLease(name: string): boolean {
    const ok = this.etcd.call<boolean>('leaseRenew', { name }, CALL_TIMEOUT_MS);
    if (!ok && this.fence?.name === name) this.fence = undefined;
    return ok;
  }

  releaseLease(name: string): boolean {
    if (this.fence?.name === name) this.fence = undefined;
    return this.etcd.call<boolean>('leaseRelease', { name }, CALL_TIMEOUT_MS);
  }

  getLease(name: string): Lease | undefined {
    const r = this.etcd.call<{ holder: LeaseValue; ttlLeftMs: number } | undefined>('leaseGet', { name }, CALL_TIMEOUT_MS);
    return r && toLease(name, r.holder, r.ttlLeftMs);
  }

  // The mirror

  /** Temp triggers note every row a transaction inserts, updates or deletes. */
  private captureChanges(): void {
    // No key, no OR IGNORE: an outer statement's conflict clause (an upsert) would override the
    // trigger's. Repeats are removed when the changes are read.
    this.db.exec('CREATE TEMP TABLE drsite_changes (tbl TEXT NOT NULL, pk TEXT NOT NULL)');
    for (const t of this.tables.values()) {
      const pk = (row: 'NEW' | 'OLD') => `json_array(${t.pk.map((c) => `${row}.${c}`).join(', ')})`;
      const note = (row: 'NEW' | 'OLD') => `INSERT INTO temp.drsite_changes VALUES ('${t.name}', ${pk(row)});`;
      this.db.exec(`CREATE TEMP TRIGGER drsite_${t.name}_i AFTER INSERT ON main.${t.name} BEGIN ${note('NEW')} END`);
      this.db.exec(`CREATE TEMP TRIGGER drsite_${t.name}_u AFTER UPDATE ON main.${t.name} BEGIN ${note('OLD')} ${note('NEW')} END`);
      this.db.exec(`CREATE TEMP TRIGGER drsite_${t.name}_d AFTER DELETE ON main.${t.name} BEGIN ${note('OLD')} END`);
    }
  }

  /** Sends the rows this transaction touched to etcd; throws Conflict when another writer came first. */
  private push(): void {
    const changed = this.db.prepare('SELECT DISTINCT tbl, pk FROM temp.drsite_changes').all() as { tbl: string; pk: string }[];
    this.db.exec('DELETE FROM temp.drsite_changes');
    if (changed.length === 0) return;
    const puts: [string, string][] = [];
    const deletes: string[] = [];
    for (const { tbl, pk } of changed) {
      const t = this.tables.get(tbl)!;
      const values = JSON.parse(pk) as SQLInputValue[];
      const row = this.db.prepare(`SELECT * FROM main.${tbl} WHERE ${t.pk.map((c) => `${c} = ?`).join(' AND ')}`).get(...values);
      if (row) puts.push([`${tbl}/${pk}`, JSON.stringify(row)]);
      else deletes.push(`${tbl}/${pk}`);
    }
    let r: CommitResult;
    try {
      r = this.etcd.call<CommitResult>('commit', { expect: this.rev, puts, deletes, ...(this.fence && { fence: this.fence }) }, CALL_TIMEOUT_MS);
    } catch (e) {
      throw tooBig(e, this.path, puts.length + deletes.length) ?? e;
    }
    if (r.ok) {
      this.rev = r.rev;
      return;
    }
    if (r.why === 'fenced') {
      this.fence = undefined;
      throw new TerminalError('invalid-state', `vault ${this.path}: this process no longer holds the reconcile lease (another drsite took over); nothing was recorded`);
    }
    throw new Conflict();
  }

  /** Brings the mirror up to etcd's current version of the vault. */
  private sync(): void {
    if (!this.isOpen) return; // the statement that follows says the vault is closed
    const s = this.etcd.call<Synced>('sync', { since: this.rev }, CALL_TIMEOUT_MS);
    if (s.rev === this.rev) return;
    this.atomically('BEGIN IMMEDIATE', () => {
      this.db.exec('PRAGMA defer_foreign_keys = ON');
      if (s.keys) {
        const present = new Set(s.keys);
        for (const t of this.tables.values()) {
          const cols = t.pk.join(', ');
          for (const r of this.db.prepare(`SELECT json_array(${cols}) AS pk FROM main.${t.name}`).all() as { pk: string }[]) {
            if (!present.has(`${t.name}/${r.pk}`)) this.db.prepare(`DELETE FROM main.${t.name} WHERE json_array(${cols}) = ?`).run(r.pk);
          }
        }
      }
      for (const [k, v] of s.puts ?? []) {
        const t = this.tables.get(k.slice(0, k.indexOf('/')));
        if (!t) continue; // a table of a newer drsite (refused at open) or not the vault's
        const row = JSON.parse(v) as Record<string, SQLInputValue>;
        const cols = t.columns.filter((c) => c in row);
        const others = cols.filter((c) => !t.pk.includes(c));
        this.db
          .prepare(
            `INSERT INTO main.${t.name} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})
             ON CONFLICT (${t.pk.join(', ')}) DO ${others.length ? `UPDATE SET ${others.map((c) => `${c} = excluded.${c}`).join(', ')}` : 'NOTHING'}`,
          )
          .run(...cols.map((c) => row[c]));
      }
      this.db.exec('DELETE FROM temp.drsite_changes');
    });
    this.rev = s.rev;
  }
}

/** etcd's own limits on one transaction, said with the flag that raises them. */
function tooBig(e: unknown, path: string, rows: number): TerminalError | undefined {
  const m = (e as Error).message ?? '';
  const flag = /too many operations in txn/.test(m) ? '--max-txn-ops' : /request is too large/.test(m) ? '--max-request-bytes' : undefined;
  if (!flag) return undefined;
  return new TerminalError('invalid-state', `vault ${path}: one transaction changes ${rows} rows, more than this etcd cluster accepts in one transaction; start its members with a larger ${flag} (docs/control-plane.md: --max-txn-ops 10000 --max-request-bytes 33554432); nothing was recorded`);
}

function describeTables(c: Connection): Map<string, Table> {
  const names = c.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[];
  const tables = new Map<string, Table>();
  for (const { name } of names) {
    const info = c.db.prepare(`PRAGMA table_info(${name})`).all() as { name: string; pk: number }[];
    const pk = info.filter((i) => i.pk > 0).sort((a, b) => a.pk - b.pk).map((i) => i.name);
    tables.set(name, { name, columns: info.map((i) => i.name), pk });
  }
  return tables;
}

function toLease(name: string, h: LeaseValue, ttlLeftMs: number): Lease {
  return { name, pid: h.pid, host: h.host, command: h.command, acquiredAt: iso(h.acquiredAt), expiresAt: iso(Date.now() + ttlLeftMs) };
}

/** The worker's file, for tools that list what a build must ship. */
export const ETCD_WORKER_FILE = fileURLToPath(new URL('./etcd-worker.ts', import.meta.url));

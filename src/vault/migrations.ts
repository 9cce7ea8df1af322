// The vault's schema history. Each migration runs once, in its own transaction, and the schema
// version lives in PRAGMA user_version, so a vault is always at exactly one known version.

import type { DatabaseSync } from 'node:sqlite';
import { TerminalError } from '../model/errors.ts';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly up: string;
}

/** Append only: a released migration is never edited, a change is a new entry. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    up: `
      CREATE TABLE resources (
        kind        TEXT    NOT NULL,
        name        TEXT    NOT NULL,
        generation  INTEGER NOT NULL,
        spec        TEXT    NOT NULL, -- canonical JSON
        updated_at  INTEGER NOT NULL, -- ms since epoch
        deleted_at  INTEGER,          -- tombstone: keeps the generation counter monotonic
        PRIMARY KEY (kind, name)
      ) STRICT;

      CREATE TABLE status (
        kind                TEXT    NOT NULL,
        name                TEXT    NOT NULL,
        observed_generation INTEGER NOT NULL,
        conditions          TEXT    NOT NULL, -- JSON array of Condition
        fields              TEXT    NOT NULL, -- JSON object
        updated_at          INTEGER NOT NULL,
        PRIMARY KEY (kind, name)
      ) STRICT;

      CREATE TABLE jobs (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- creation order, the tie-breaker within a millisecond
        id          TEXT    NOT NULL UNIQUE,
        type        TEXT    NOT NULL,
        target      TEXT    NOT NULL,
        parent_id   TEXT    REFERENCES jobs(id) ON DELETE CASCADE,
        state       TEXT    NOT NULL,
        input       TEXT,             -- JSON
        error       TEXT,             -- JSON {message, code?}
        created_at  INTEGER NOT NULL,
        ended_at    INTEGER
      ) STRICT;
      CREATE INDEX jobs_parent ON jobs(parent_id);

      CREATE TABLE job_steps (
        job_id      TEXT    NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        position    INTEGER NOT NULL,
        name        TEXT    NOT NULL,
        state       TEXT    NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        error       TEXT,             -- JSON {message, code?}
        output      TEXT,             -- JSON
        PRIMARY KEY (job_id, name)
      ) STRICT;

      CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT    NOT NULL,
        name        TEXT    NOT NULL,
        type        TEXT    NOT NULL,
        reason      TEXT    NOT NULL,
        message     TEXT    NOT NULL,
        at          INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE last_actions (
        kind        TEXT    NOT NULL,
        name        TEXT    NOT NULL,
        action_id   TEXT    NOT NULL,
        type        TEXT    NOT NULL,
        job_id      TEXT,
        state       TEXT    NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (kind, name)
      ) STRICT;
    `,
  },
  {
    version: 2,
    name: 'pending marks and lookup indexes',
    up: `
      CREATE TABLE pending_marks (
        key         TEXT    PRIMARY KEY,
        payload     TEXT    NOT NULL, -- JSON
        created_at  INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX events_object ON events(kind, name, id);
      CREATE INDEX jobs_target ON jobs(target, seq);
      CREATE INDEX jobs_state ON jobs(state, seq);
    `,
  },
  {
    version: 3,
    name: 'event aggregation (count, first and last time)',
    // A polling loop repeats the same event every pass; like Kubernetes we fold repeats into one
    // row with a count instead of growing the table. Existing rows become count 1.
    up: `
      ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
      ALTER TABLE events ADD COLUMN first_at INTEGER;
      UPDATE events SET first_at = at;
      ALTER TABLE events RENAME COLUMN at TO last_at;
    `,
  },
  {
    version: 4,
    name: 'reconcile lease and vault facts',
    // One process at a time acts on the sites for a vault (leases.ts); vault_info keeps facts
    // about the file itself, such as "created empty, not yet compared with the sites" (meta.ts).
    up: `
      CREATE TABLE leases (
        name        TEXT    PRIMARY KEY,
        holder_pid  INTEGER NOT NULL,
        holder_host TEXT    NOT NULL,
        command     TEXT    NOT NULL,
        acquired_at INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
      ) STRICT;
      CREATE TABLE vault_info (
        key         TEXT    PRIMARY KEY,
        value       TEXT    NOT NULL
      ) STRICT;
    `,
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

export function schemaVersion(db: DatabaseSync): number {
  return Number((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version);
}

/**
 * Brings db up to the last of `migrations` (the test passes a prefix to build old vaults).
 * Each step re-reads the version inside its write transaction, so two processes opening the same
 * old vault at once apply every migration exactly once. Returns the versions applied.
 */
export function migrate(db: DatabaseSync, where: string, migrations: readonly Migration[] = MIGRATIONS): number[] {
  checkOrdered(migrations);
  const latest = migrations.length ? migrations[migrations.length - 1].version : 0;
  const found = schemaVersion(db);
  if (found > latest) {
    throw new TerminalError(
      'invalid-state',
      `vault ${where} has schema version ${found}, newer than this drsite supports (${latest}); it was written by a newer drsite: upgrade drsite to open it`,
    );
  }
  const applied: number[] = [];
  for (const m of migrations) {
    if (schemaVersion(db) >= m.version) continue;
    db.exec('BEGIN IMMEDIATE');
    try {
      const current = schemaVersion(db);
      if (current < m.version) {
        if (current !== m.version - 1) {
          throw new TerminalError('invalid-state', `vault ${where}: at schema version ${current}, cannot apply migration ${m.version} (${m.name})`);
        }
        db.exec(m.up);
        // user_version lives in the database header, so it commits or rolls back with the migration.
        db.exec(`PRAGMA user_version = ${m.version}`);
        applied.push(m.version);
      }
      db.exec('COMMIT');
    } catch (e) {
      if (db.isTransaction) db.exec('ROLLBACK');
      if (TerminalError.is(e)) throw e;
      throw new TerminalError('invalid-state', `vault ${where}: migration ${m.version} (${m.name}) failed: ${(e as Error).message}`, { cause: e });
    }
  }
  return applied;
}

function checkOrdered(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) {
      throw new TerminalError('invalid-state', `vault migrations out of order: entry ${i} has version ${m.version}, expected ${i + 1}`);
    }
  });
}

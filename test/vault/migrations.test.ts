import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, expect, it } from 'vitest';
import { TerminalError } from '../../src/model/errors.ts';
import { MIGRATIONS, SCHEMA_VERSION, migrate } from '../../src/vault/migrations.ts';
import { Vault } from '../../src/vault/vault.ts';
import { useTempDir } from './temp-dir.ts';

const tempDir = useTempDir();
const T0 = Date.UTC(2025, 5, 1, 12, 0, 0);

function userVersion(path: string): number {
  const db = new DatabaseSync(path);
  try {
    return Number((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version);
  } finally {
    db.close();
  }
}

/** Rows written with the SQL of schema version k, as a drsite of that version would have. */
function seed(db: DatabaseSync, k: number): void {
  db.exec(`INSERT INTO resources (kind, name, generation, spec, updated_at) VALUES ('ProtectedVM', 'web-1', 4, '{"policy":"gold","vm":"web-1"}', ${T0})`);
  db.exec(`INSERT INTO status (kind, name, observed_generation, conditions, fields, updated_at)
           VALUES ('ProtectedVM', 'web-1', 3, '[{"lastTransitionTime":"2025-06-01T11:00:00.000Z","message":"ok","reason":"Replicating","status":"True","type":"Ready"}]', '{"state":"Replicating"}', ${T0})`);
  db.exec(`INSERT INTO jobs (id, type, target, state, created_at) VALUES ('job-old-1', 'EnableProtection', 'ProtectedVM/web-1', 'Running', ${T0})`);
  db.exec(`INSERT INTO job_steps (job_id, position, name, state, attempt, started_at) VALUES ('job-old-1', 1, 'create-replica', 'Running', 1, ${T0})`);
  db.exec(`INSERT INTO last_actions (kind, name, action_id, type, job_id, state, recorded_at) VALUES ('RecoveryPlan', 'tier1', 'drill-7', 'test', 'job-old-1', 'Succeeded', ${T0})`);
  if (k < 3) {
    db.exec(`INSERT INTO events (kind, name, type, reason, message, at) VALUES ('ProtectedVM', 'web-1', 'Warning', 'CycleMissed', 'late', ${T0})`);
  } else {
    db.exec(`INSERT INTO events (kind, name, type, reason, message, count, first_at, last_at) VALUES ('ProtectedVM', 'web-1', 'Warning', 'CycleMissed', 'late', 1, ${T0}, ${T0})`);
  }
  if (k >= 2) db.exec(`INSERT INTO pending_marks (key, payload, created_at) VALUES ('create/web-1', '{"site":"dr"}', ${T0})`);
}

describe('vault migrations', () => {
  it('are numbered 1..n in order', () => {
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
    expect(SCHEMA_VERSION).toBe(MIGRATIONS.length);
    expect(MIGRATIONS.length).toBeGreaterThanOrEqual(2);
  });

  it('creates a vault, and its parent directories, from nothing', () => {
    const path = join(tempDir(), 'a', 'b', 'vault.db');
    const v = Vault.open(path);
    expect(v.schemaVersion).toBe(SCHEMA_VERSION);
    expect(v.recordDesired('Site', 'primary', { type: 'host' })).toEqual({ generation: 1, changed: true });
    v.close();
    expect(userVersion(path)).toBe(SCHEMA_VERSION);
    const db = new DatabaseSync(path);
    expect((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode).toBe('wal');
    db.close();
  });

  it('migrates an existing empty (zero-byte) file', () => {
    const path = join(tempDir(), 'vault.db');
    writeFileSync(path, '');
    const v = Vault.open(path);
    expect(v.schemaVersion).toBe(SCHEMA_VERSION);
    v.close();
  });

  it('opens an in-memory vault', () => {
    const v = Vault.open(':memory:');
    expect(v.schemaVersion).toBe(SCHEMA_VERSION);
    v.recordDesired('Site', 's', {});
    expect(v.listDesired()).toHaveLength(1);
    v.close();
  });

  for (let k = 1; k <= SCHEMA_VERSION; k++) {
    it(`upgrades a vault written at schema version ${k}, keeping its data`, () => {
      const path = join(tempDir(), 'vault.db');
      const db = new DatabaseSync(path);
      expect(migrate(db, path, MIGRATIONS.slice(0, k))).toEqual(MIGRATIONS.slice(0, k).map((m) => m.version));
      seed(db, k);
      db.close();
      expect(userVersion(path)).toBe(k);

      const v = Vault.open(path);
      expect(v.schemaVersion).toBe(SCHEMA_VERSION);
      expect(v.getDesired('ProtectedVM', 'web-1')).toEqual({
        kind: 'ProtectedVM', name: 'web-1', generation: 4, spec: { vm: 'web-1', policy: 'gold' }, updatedAt: new Date(T0).toISOString(),
      });
      // the same spec is not a change, whichever version stored it
      expect(v.recordDesired('ProtectedVM', 'web-1', { vm: 'web-1', policy: 'gold' })).toEqual({ generation: 4, changed: false });
      const st = v.getStatus('ProtectedVM', 'web-1')!;
      expect(st.observedGeneration).toBe(3);
      expect(st.fields).toEqual({ state: 'Replicating' });
      expect(st.conditions[0]).toMatchObject({ type: 'Ready', status: 'True', lastTransitionTime: '2025-06-01T11:00:00.000Z' });
      const job = v.getJob('job-old-1')!;
      expect(job.state).toBe('Running');
      expect(job.steps.map((s) => [s.name, s.state])).toEqual([['create-replica', 'Running']]);
      expect(v.getLastAction('RecoveryPlan', 'tier1')).toMatchObject({ id: 'drill-7', type: 'test', jobId: 'job-old-1', state: 'Succeeded' });
      expect(v.listEvents({ limit: 10 })).toEqual([
        {
          id: 1, kind: 'ProtectedVM', name: 'web-1', type: 'Warning', reason: 'CycleMissed', message: 'late', count: 1,
          firstTimestamp: new Date(T0).toISOString(), lastTimestamp: new Date(T0).toISOString(),
        },
      ]);
      expect(v.listPending()).toEqual(k >= 2 ? [{ key: 'create/web-1', payload: { site: 'dr' }, createdAt: new Date(T0).toISOString() }] : []);
      // the upgraded schema works for new writes
      expect(v.recordEvent({ kind: 'ProtectedVM', name: 'web-1', type: 'Warning', reason: 'CycleMissed', message: 'late' }).count).toBe(2);
      v.markPending('create/web-2', {});
      v.close();
      expect(userVersion(path)).toBe(SCHEMA_VERSION);
    });
  }

  it('refuses a vault written by a newer drsite, and leaves it untouched', () => {
    const path = join(tempDir(), 'vault.db');
    Vault.open(path).close();
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    let err: unknown;
    try {
      Vault.open(path);
    } catch (e) {
      err = e;
    }
    expect(TerminalError.is(err)).toBe(true);
    expect((err as TerminalError).code).toBe('invalid-state');
    expect((err as Error).message).toContain(`schema version ${SCHEMA_VERSION + 1}, newer than this drsite supports (${SCHEMA_VERSION})`);
    expect((err as Error).message).toContain(path);
    expect(userVersion(path)).toBe(SCHEMA_VERSION + 1);
  });

  it('refuses a file that is not a database, without changing it', () => {
    const path = join(tempDir(), 'vault.db');
    writeFileSync(path, 'this is not sqlite, but it is long enough to have a header. '.repeat(10));
    const before = readFileSync(path);
    expect(() => Vault.open(path)).toThrow(expect.objectContaining({ name: 'TerminalError', code: 'invalid-state' }));
    expect(readFileSync(path)).toEqual(before);
    expect(existsSync(`${path}-wal`)).toBe(false);
  });

  it('rolls a failing migration back completely', () => {
    const path = join(tempDir(), 'vault.db');
    Vault.open(path).close();
    const broken = [...MIGRATIONS, { version: SCHEMA_VERSION + 1, name: 'broken', up: 'CREATE TABLE half_done (a); SELECT * FROM no_such_table;' }];
    const db = new DatabaseSync(path);
    expect(() => migrate(db, path, broken)).toThrow(/migration \d+ \(broken\) failed: no such table: no_such_table/);
    expect(Number((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version)).toBe(SCHEMA_VERSION);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'half_done'").get()).toBeUndefined();
    db.close();
  });
});

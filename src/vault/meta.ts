// Facts about the vault file itself (the vault_info table), as opposed to the resources it holds.
// The one kept today: the file was created empty and no reconcile pass has compared it with the
// sites yet, which is how a pass recognises a vault rebuilt next to sites that already replicate.

import type { Connection } from './sqlite.ts';

const CREATED_EMPTY = 'created-empty';

export function markCreatedEmpty(c: Connection, now: number): void {
  c.run('INSERT INTO vault_info (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING', CREATED_EMPTY, String(now));
}

export function isCreatedEmpty(c: Connection): boolean {
  return c.get('SELECT 1 AS x FROM vault_info WHERE key = ?', CREATED_EMPTY) !== undefined;
}

export function clearCreatedEmpty(c: Connection): void {
  c.run('DELETE FROM vault_info WHERE key = ?', CREATED_EMPTY);
}

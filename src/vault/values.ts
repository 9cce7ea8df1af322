// Conversions shared by the vault's tables: resource keys, stored times, error values.

import { TerminalError } from '../model/errors.ts';

export function checkKey(kind: string, name: string): void {
  if (typeof kind !== 'string' || kind === '' || typeof name !== 'string' || name === '') {
    throw new TerminalError('invalid-argument', `resource key must be a non-empty kind and name, got ${JSON.stringify(kind)}/${JSON.stringify(name)}`);
  }
}

/** Times are stored as integer milliseconds (sortable, compact) and shown as ISO 8601 UTC. */
export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A failure as it is kept on a job or step: the message, and the typed code when there is one. */
export interface StoredError {
  readonly message: string;
  readonly code?: string;
}

export function toStoredError(e: unknown): StoredError {
  if (typeof e === 'string') return { message: e };
  if (typeof e === 'object' && e !== null) {
    const { message, code } = e as { message?: unknown; code?: unknown };
    const m = typeof message === 'string' ? message : String(e);
    return typeof code === 'string' ? { message: m, code } : { message: m };
  }
  return { message: String(e) };
}

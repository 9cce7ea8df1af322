// Conversions shared by the vault's tables: resource keys, stored times, error values.

import { TerminalError, isRecoverable } from '../model/errors.ts';

export function checkKey(kind: string, name: string): void {
  if (typeof kind !== 'string' || kind === '' || typeof name !== 'string' || name === '') {
    throw new TerminalError('invalid-argument', `resource key must be a non-empty kind and name, got ${JSON.stringify(kind)}/${JSON.stringify(name)}`);
  }
}

/** Times are stored as integer milliseconds (sortable, compact) and shown as ISO 8601 UTC. */
export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A failure as it is kept on a job or step: the message, the typed code when there is one, and whether it is retried. */
export interface StoredError {
  readonly message: string;
  readonly code?: string;
  /** Retried on the backoff schedule (true) or left for an operator (false). Absent on rows written before it existed. */
  readonly recoverable?: boolean;
}

/**
 * Keeps the message, the code and the retry decision, made once here by model/errors.ts's
 * isRecoverable so that readers (the reconcile loop) never re-derive it from the code.
 */
export function toStoredError(e: unknown): StoredError {
  if (typeof e === 'string') return { message: e, recoverable: false };
  if (typeof e === 'object' && e !== null) {
    const stored = e as Partial<StoredError>;
    // Already stored (a step's error copied to its job): keep its decision.
    if (typeof stored.recoverable === 'boolean' && typeof stored.message === 'string') return { ...stored } as StoredError;
    const { message, code } = e as { message?: unknown; code?: unknown };
    const m = typeof message === 'string' ? message : String(e);
    return typeof code === 'string' ? { message: m, code, recoverable: isRecoverable(e) } : { message: m, recoverable: isRecoverable(e) };
  }
  return { message: String(e), recoverable: false };
}

// Typed runtime errors. Whether an error is retried is a property of its type, decided here
// and nowhere else (DESIGN.md section 4, "Retry"); nothing matches on message text.

const TERMINAL = Symbol.for('drsite.TerminalError');
const RETRYABLE = Symbol.for('drsite.RetryableError');

/** Why an operation failed, as Hyper-V Replica and Site Recovery classify it. */
export type ErrorCode =
  // recoverable
  | 'network'
  | 'low-disk'
  | 'low-memory'
  | 'busy'
  | 'integrity' // a damaged or truncated log: rejected, re-requested
  // non-recoverable
  | 'broken-chain'
  | 'invalid-state'
  | 'authentication'
  | 'authorization'
  | 'not-found'
  | 'invalid-argument';

/** A failure an operator must act on: never retried automatically; health goes Critical. */
export class TerminalError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TerminalError';
    this.code = code;
    Object.defineProperty(this, TERMINAL, { value: true });
  }
  static is(e: unknown): e is TerminalError {
    return typeof e === 'object' && e !== null && TERMINAL in e;
  }
}

/** A failure that goes away by itself: retried on the backoff schedule; health Warning. */
export class RetryableError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RetryableError';
    this.code = code;
    Object.defineProperty(this, RETRYABLE, { value: true });
  }
  static is(e: unknown): e is RetryableError {
    return typeof e === 'object' && e !== null && RETRYABLE in e;
  }
}

const RECOVERABLE_SYSCALL = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
  'ENOSPC', 'EDQUOT', 'ENOMEM', 'EAGAIN', 'EBUSY',
]);

/**
 * The one classification point: is this failure worth retrying?
 * Typed errors answer for themselves; Node system errors are recoverable when they describe the
 * network, a full disk or memory pressure; anything unknown is treated as terminal so that a
 * bug is shown to an operator instead of looping forever.
 */
export function isRecoverable(e: unknown): boolean {
  if (RetryableError.is(e)) return true;
  if (TerminalError.is(e)) return false;
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && RECOVERABLE_SYSCALL.has(code);
}

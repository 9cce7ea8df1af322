// Maps Azure Storage failures to the engine's typed errors, in one place: network trouble and
// server errors are retried, credentials and permissions need an operator, and so does a missing
// container (someone deleted it or the Site names the wrong one).
import { RetryableError, TerminalError } from '../model/errors.ts';

/** Error codes of a request refused for lack of permission (the caller is known). */
const AUTHORIZATION_CODES = new Set([
  'AuthorizationPermissionMismatch',
  'AuthorizationResourceTypeMismatch',
  'AuthorizationServiceMismatch',
  'AuthorizationProtocolMismatch',
  'AuthorizationSourceIPMismatch',
  'InsufficientAccountPermissions',
]);

interface RestLike {
  name?: string;
  statusCode?: number;
  code?: string;
  message?: string;
  details?: { errorCode?: string };
}

/** The storage service's error code (HEAD responses carry none, only a status). */
export function azureErrorCode(e: unknown): string | undefined {
  const r = e as RestLike | null;
  return r?.details?.errorCode ?? r?.code;
}

export function azureStatus(e: unknown): number | undefined {
  return (e as RestLike | null)?.statusCode;
}

/**
 * The typed error for a failed storage call on `what` (a blob or container name). Azure answers a
 * bad key or SAS with 403 (AuthenticationFailed; Azurite says AuthorizationFailure), so a 403 is an
 * authentication failure unless its code says the caller lacks a permission.
 */
export function toTypedError(e: unknown, what: string): Error {
  if (TerminalError.is(e) || RetryableError.is(e)) return e as Error;
  const status = azureStatus(e);
  const code = azureErrorCode(e);
  const detail = `${code ?? (status ? `HTTP ${status}` : (e as Error)?.message ?? String(e))}`;
  if (status === undefined || status === 0) {
    // No HTTP answer at all: refused, reset, timed out, DNS. Nothing reached the storage account.
    return new RetryableError('network', `Azure Storage unreachable while accessing ${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  }
  if (status === 401) return new TerminalError('authentication', `Azure Storage rejected the credentials for ${what} (${detail})`, { cause: e });
  if (status === 403) {
    if (code && AUTHORIZATION_CODES.has(code)) {
      return new TerminalError('authorization', `Azure Storage credentials lack permission for ${what} (${detail})`, { cause: e });
    }
    return new TerminalError('authentication', `Azure Storage rejected the credentials for ${what} (${detail}): check the account key or SAS token`, { cause: e });
  }
  if (status === 404) return new TerminalError('not-found', `Azure Storage: ${code === 'ContainerNotFound' ? `the container of ${what}` : what} not found (${detail})`, { cause: e });
  if (status === 408 || status === 429 || status >= 500) {
    return new RetryableError(status === 503 || status === 429 ? 'busy' : 'network', `Azure Storage failed on ${what} (${detail}); will retry`, { cause: e });
  }
  if (status === 409 || status === 412) return new RetryableError('busy', `Azure Storage conflict on ${what} (${detail})`, { cause: e });
  return new TerminalError('invalid-argument', `Azure Storage refused a request on ${what} (${detail})`, { cause: e });
}

/** Runs one storage call, rethrowing its failure as a typed error. */
export async function azureCall<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toTypedError(e, what);
  }
}

/** True when the failure (raw or typed) is a 404 of the blob itself, not of its container. */
export function isBlobNotFound(e: unknown): boolean {
  const raw = TerminalError.is(e) || RetryableError.is(e) ? (e as Error).cause : e;
  return azureStatus(raw) === 404 && azureErrorCode(raw) !== 'ContainerNotFound';
}

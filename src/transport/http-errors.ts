// The one place where typed errors cross HTTP: the server turns TerminalError / RetryableError
// into a status and a `{error: {code, message, retryable}}` body, and the client turns statuses
// and socket failures back into the same typed errors, so retry decisions survive the wire.
import type { ServerResponse } from 'node:http';
import { RetryableError, TerminalError, type ErrorCode } from '../model/errors.ts';

export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string; readonly retryable: boolean };
}

/** A request-level refusal whose HTTP status is not implied by its code (405, 413, 415...). */
export class HttpStatusError extends TerminalError {
  readonly status: number;
  constructor(status: number, message: string) {
    super('invalid-argument', message);
    this.name = 'HttpStatusError';
    this.status = status;
  }
}

const STATUS_OF_CODE: Readonly<Record<ErrorCode, number>> = {
  'authentication': 401,
  'authorization': 403,
  'not-found': 404,
  'invalid-state': 409,
  'broken-chain': 409,
  'invalid-argument': 400,
  'integrity': 422,
  'busy': 503,
  'low-memory': 503,
  'low-disk': 507,
  'network': 502,
};

const isErrorCode = (c: unknown): c is ErrorCode => typeof c === 'string' && Object.hasOwn(STATUS_OF_CODE, c);

const DISK_FULL = new Set(['ENOSPC', 'EDQUOT']);

/** Status and body the server sends for `err`. Untyped errors are 500 (the client retries). */
export function errorResponse(err: unknown): { status: number; body: ErrorBody } {
  if (TerminalError.is(err) || RetryableError.is(err)) {
    const status = err instanceof HttpStatusError ? err.status : STATUS_OF_CODE[err.code];
    return { status, body: { error: { code: err.code, message: err.message, retryable: RetryableError.is(err) } } };
  }
  const sys = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof sys === 'string' && DISK_FULL.has(sys)) {
    return { status: 507, body: { error: { code: 'low-disk', message, retryable: true } } };
  }
  if (sys === 'ENOMEM') return { status: 503, body: { error: { code: 'low-memory', message, retryable: true } } };
  return { status: 500, body: { error: { code: 'internal', message: `internal error: ${message}`, retryable: true } } };
}

/** Answers `res` with the status and JSON body for `err` (server side). */
export function sendError(res: ServerResponse, err: unknown): void {
  const { status, body } = errorResponse(err);
  if (res.headersSent) {
    // Too late for a status: cutting the connection is the only honest signal left.
    res.destroy(err instanceof Error ? err : undefined);
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function parseBody(body: Buffer): Partial<ErrorBody['error']> | undefined {
  try {
    const v = JSON.parse(body.toString('utf8')) as { error?: unknown };
    return typeof v.error === 'object' && v.error !== null ? (v.error as Partial<ErrorBody['error']>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The typed error for a non-2xx response. The status decides the class (409 is retryable only
 * when the body says so); the body's code is kept when it is one the status stands for (so
 * `broken-chain` survives a 409 and `low-memory` a 503), else the status's default code.
 */
export function errorFromResponse(status: number, body: Buffer, where: string): TerminalError | RetryableError {
  const e = parseBody(body);
  const text = typeof e?.message === 'string' ? e.message : body.toString('utf8').slice(0, 200).trim() || `HTTP ${status}`;
  const message = `${where}: ${text}`;
  const code = (fallback: ErrorCode): ErrorCode =>
    isErrorCode(e?.code) && STATUS_OF_CODE[e.code] === status ? e.code : fallback;
  switch (status) {
    case 401: return new TerminalError('authentication', message);
    case 403: return new TerminalError('authorization', message);
    case 404: return new TerminalError('not-found', message);
    case 409:
      return e?.retryable === true
        ? new RetryableError(code('invalid-state'), message)
        : new TerminalError(code('invalid-state'), message);
    case 422: return new RetryableError('integrity', message);
    case 503: return new RetryableError(code('busy'), message);
    case 507: return new RetryableError('low-disk', message);
  }
  if (status >= 500) return new RetryableError('network', message);
  return new TerminalError('invalid-argument', message);
}

// Certificate verification results (OpenSSL X509_V_ERR names as Node reports them).
const CERT_FAILURES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE', 'CERT_REVOKED', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'INVALID_PURPOSE',
  'INVALID_CA', 'PATH_LENGTH_EXCEEDED', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

// A TLS record that failed its MAC or could not be decrypted (detected here, or reported by the
// peer's alert), or one whose length field was damaged: bytes corrupted in transit on an
// established connection, not a credential an operator must fix.
const RECORD_CORRUPTED = /BAD_RECORD_MAC|DECRYPTION_FAILED|RECORD_OVERFLOW/;

/**
 * The typed error for a failed request that got no HTTP answer: TLS and certificate failures
 * (including our own unusable certificate or key) are authentication problems an operator must fix; everything else on the socket (refused, reset,
 * timed out, DNS) is the network and is retried. A TLS record damaged in transit is an integrity
 * failure, retried like a damaged log.
 */
export function errorFromSocket(err: unknown, where: string): TerminalError | RetryableError {
  if (TerminalError.is(err) || RetryableError.is(err)) return err;
  const code = String((err as { code?: unknown } | null)?.code ?? '');
  const message = err instanceof Error ? err.message : String(err);
  if (code.startsWith('ERR_SSL_') && RECORD_CORRUPTED.test(code)) {
    return new RetryableError('integrity', `${where}: a TLS record was damaged in transit (${code}): ${message}`, { cause: err });
  }
  if (CERT_FAILURES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_OSSL_') || code === 'EPROTO') {
    return new TerminalError('authentication', `${where}: TLS handshake failed (${code}): ${message}`, { cause: err });
  }
  return new RetryableError('network', `${where}: ${code ? `${code}: ` : ''}${message}`, { cause: err });
}

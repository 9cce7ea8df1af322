// JSON on the agent API: reading a request body with a size cap (a peer cannot make the server
// buffer without bound) and writing a response. The API's paths belong to the agent, not here.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpStatusError } from './http-errors.ts';

export const CONTENT_TYPE_JSON = 'application/json; charset=utf-8';
export const CONTENT_TYPE_OCTETS = 'application/octet-stream';

/** @default limit for `readJson`: 1 MiB. */
export const DEFAULT_JSON_LIMIT = 1 << 20;

/**
 * The request body parsed as JSON. Throws HttpStatusError 413 when it exceeds `limit` bytes
 * (before buffering it), 400 when it is not JSON. Callers still validate the shape.
 */
export async function readJson<T = unknown>(req: IncomingMessage, limit: number = DEFAULT_JSON_LIMIT): Promise<T> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) {
    req.resume(); // drain so the connection can answer instead of being reset
    throw new HttpStatusError(413, `request body of ${declared} bytes exceeds the ${limit}-byte limit`);
  }
  // Events rather than for-await: leaving an async iterator early destroys the request, and with
  // it the socket, so the peer would see a reset instead of the 413.
  const parts: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (over) return;
      if (size > limit) {
        over = true;
        parts.length = 0;
        return;
      }
      parts.push(chunk);
    });
    req.once('end', () =>
      over ? reject(new HttpStatusError(413, `request body exceeds the ${limit}-byte limit`)) : resolve(),
    );
    req.once('error', reject);
  });
  const text = Buffer.concat(parts).toString('utf8');
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new HttpStatusError(400, `request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** Writes `value` as a JSON response with an exact Content-Length. */
export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    ...headers,
    'content-type': CONTENT_TYPE_JSON,
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

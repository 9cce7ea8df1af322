// A small method + path router for the agent API: patterns with `:name` segments, one handler
// per route, and who may call it (an operator, or a primary whose certificate a Replica server
// accepts).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PeerIdentity } from '../transport/peer.ts';

export type Caller = 'operator' | 'primary';

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  /** Common name of the client certificate. */
  peer: string;
  identity: PeerIdentity;
}

/** A handler returns a JSON body (sent with `status`, default 200) or undefined when it answered itself. */
export type Handler = (ctx: RouteContext) => Promise<unknown>;

interface Route {
  method: string;
  parts: string[];
  caller: Caller;
  handler: Handler;
  status: number;
}

export class Router {
  readonly #routes: Route[] = [];

  add(method: string, pattern: string, caller: Caller, handler: Handler, status = 200): this {
    this.#routes.push({ method, parts: pattern.split('/').filter(Boolean), caller, handler, status });
    return this;
  }

  /** The route for a request, or why there is none (404 path, 405 method). */
  match(method: string, path: string): { route: Route; params: Record<string, string> } | { error: 404 | 405 } {
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    let pathMatched = false;
    for (const route of this.#routes) {
      if (route.parts.length !== parts.length) continue;
      const params: Record<string, string> = {};
      const ok = route.parts.every((p, i) => (p.startsWith(':') ? ((params[p.slice(1)] = parts[i]), true) : p === parts[i]));
      if (!ok) continue;
      pathMatched = true;
      if (route.method === method) return { route, params };
    }
    return { error: pathMatched ? 405 : 404 };
  }
}

// The agent API's router, built from the route table of transport/agent-api.ts: patterns with
// `:name` segments, one handler per route, who may call it, and the route's body schema, checked
// (400 naming the field) before the handler runs.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { NO_FIELDS, ROUTES, type Caller, type RouteName, type RouteSpec } from '../transport/agent-api.ts';
import { checkBody } from '../transport/body-validation.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import { readJson } from '../transport/wire.ts';

export type { Caller };

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  /** Common name of the client certificate. */
  peer: string;
  identity: PeerIdentity;
  /** The request body, parsed and checked against the route's schema (undefined for routes without one). */
  body: unknown;
}

const hasBody = (req: IncomingMessage): boolean => Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;

/** The request's JSON body checked against the route's schema; a route without one takes no fields. */
async function bodyOf(spec: RouteSpec, req: IncomingMessage): Promise<unknown> {
  if (spec.body) return checkBody(spec, await readJson(req, 1 << 20));
  if (!hasBody(req)) return undefined;
  checkBody({ ...spec, body: NO_FIELDS }, await readJson(req, 1 << 20));
  return undefined;
}

/** A handler returns a JSON body (sent with the route's status) or undefined when it answered itself. */
export type Handler = (ctx: RouteContext) => Promise<unknown>;

export type Handlers = { readonly [K in RouteName]: Handler };

interface Route {
  spec: RouteSpec;
  method: string;
  parts: string[];
  caller: Caller;
  status: number;
  handler: Handler;
}

export class Router {
  readonly #routes: Route[] = [];

  /** Every route of the table, each with its handler. */
  constructor(handlers: Handlers) {
    for (const name of Object.keys(ROUTES) as RouteName[]) {
      const spec: RouteSpec = ROUTES[name];
      const handler = handlers[name];
      this.#routes.push({
        spec,
        method: spec.method,
        parts: spec.path.split('/').filter(Boolean),
        caller: spec.caller,
        status: spec.status ?? 200,
        handler: spec.raw ? handler : async (ctx) => handler({ ...ctx, body: await bodyOf(spec, ctx.req) }),
      });
    }
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

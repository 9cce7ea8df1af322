// The agent API's router, built from the route table of transport/agent-api.ts: patterns with
// `:name` segments, one handler per route, who may call it, and the route's body schema, checked
// (400 naming the field) before the handler runs.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TerminalError } from '../model/errors.ts';
import { NO_FIELDS, ROUTES, type Caller, type ParamNames, type RequestOf, type ResponseOf, type RouteName, type RouteSpec } from '../transport/agent-api.ts';
import { checkBody } from '../transport/body-validation.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import { readJson } from '../transport/wire.ts';

export type { Caller };

/** What a handler of route `R` gets: its `:name` segments (decoded) and its checked body, typed by the table. */
export interface RouteContext<R extends RouteSpec = RouteSpec> {
  req: IncomingMessage;
  res: ServerResponse;
  params: { readonly [K in ParamNames<R['path']>]: string };
  query: URLSearchParams;
  /** Common name of the client certificate. */
  peer: string;
  identity: PeerIdentity;
  /** The request body, parsed and checked against the route's schema (undefined for routes without one
   * and for raw routes, whose handler reads `req` itself). */
  body: RequestOf<R>;
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
export type Handler<R extends RouteSpec = RouteSpec> = (ctx: RouteContext<R>) => Promise<ResponseOf<R> | undefined>;

/** One handler for every entry of the table, each typed by its entry. */
export type Handlers = { readonly [K in RouteName]: Handler<(typeof ROUTES)[K]> };

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
      // The table's entries differ only in types; at run time each handler gets its own route's context.
      const handler = handlers[name] as Handler;
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

  /**
   * The route for a request, or why there is none (404 path, 405 method). Throws TerminalError
   * 'invalid-argument' (400) for a segment that is not valid percent-encoding and for a `:seq`
   * that is not a canonical decimal (`1e3`, `0x10`, ` 1` would otherwise name other sequences).
   */
  match(method: string, path: string): { route: Route; params: Record<string, string> } | { error: 404 | 405 } {
    const parts = path.split('/').filter(Boolean).map(decodeSegment);
    let pathMatched = false;
    for (const route of this.#routes) {
      if (route.parts.length !== parts.length) continue;
      const params: Record<string, string> = {};
      const ok = route.parts.every((p, i) => (p.startsWith(':') ? ((params[p.slice(1)] = parts[i]), true) : p === parts[i]));
      if (!ok) continue;
      pathMatched = true;
      if (route.method !== method) continue;
      if (params.seq !== undefined && !/^[1-9][0-9]{0,15}$/.test(params.seq)) {
        throw new TerminalError('invalid-argument', `sequence number ${JSON.stringify(params.seq.slice(0, 64))} is not a positive decimal integer`);
      }
      return { route, params };
    }
    return { error: pathMatched ? 405 : 404 };
  }
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new TerminalError('invalid-argument', `path segment ${JSON.stringify(segment.slice(0, 64))} is not valid percent-encoded UTF-8`);
  }
}

// Calling the agent API through its route table: the path is built from the route's entry and
// its parameters, and the answer is typed as the route declares it. Every client of the agent
// (site drivers, the primary's replica link, the tests' client) goes through here.
import { pathOf, type PathParams, type RequestOf, type ResponseOf, type RouteSpec } from './agent-api.ts';
import type { MtlsClient, MtlsResponse, RequestBody } from './mtls.ts';

export interface CallOptions {
  /** Query parameters (`?wait=true`). */
  readonly query?: Readonly<Record<string, string>>;
  readonly headers?: Record<string, string>;
}

/** The route's path with its parameters and query filled in. */
export function urlOf<R extends RouteSpec>(route: R, params: PathParams<R>, query?: CallOptions['query']): string {
  const qs = query ? new URLSearchParams(query).toString() : '';
  return pathOf(route, params) + (qs ? `?${qs}` : '');
}

/** One request of `route` with any body (a stream, bytes, JSON): for raw routes and their headers. */
export function requestRoute<R extends RouteSpec>(client: MtlsClient, route: R, params: PathParams<R>, body?: RequestBody, opts: CallOptions = {}): Promise<MtlsResponse> {
  return client.request(route.method, urlOf(route, params, opts.query), body, opts.headers);
}

/** One call of `route`: its JSON answer, typed as the route declares it (undefined for an empty body). */
export async function callRoute<R extends RouteSpec>(client: MtlsClient, route: R, params: PathParams<R>, body?: RequestOf<R>, opts: CallOptions = {}): Promise<ResponseOf<R>> {
  const res = await requestRoute(client, route, params, body as RequestBody | undefined, opts);
  return (res.body.length ? res.json<ResponseOf<R>>() : undefined) as ResponseOf<R>;
}

// The tests' client of the agent API, derived from its route table: a request names a table entry
// and its path parameters, its body is the route's request type, and its answer's `json()` is the
// route's response type unless the test asks for another. `sendRaw` sends any body (bad JSON,
// wrong fields, streams) for the tests that mean to send a malformed request.
import { ROUTES, pathOf, type PathParams, type RequestOf, type ResponseOf, type RouteSpec } from '../../src/transport/agent-api.ts';
import { requestRoute, urlOf, type CallOptions } from '../../src/transport/agent-call.ts';
import type { MtlsClient, MtlsResponse, RequestBody } from '../../src/transport/mtls.ts';
import type { ReplicationPolicySpec } from '../../src/model/types.generated.ts';

export { ROUTES, pathOf, urlOf };

/** An answer whose `json()` is typed as the route declares it. */
export interface AgentResponse<Res> extends MtlsResponse {
  json<T = Res>(): T;
}

/**
 * A route's request body as the tests write it. A policy is typed as a declaration's spec, its
 * frequency any string (`{ ...policy30s, frequency: '15m' }`; the agent's schema checks it): the
 * agent reads it as resolved, and the tests' policies are (applyDefaults), though their type does
 * not say so.
 */
export type TestBody<B> = B extends { policy: unknown } ? Omit<B, 'policy'> & { policy: Omit<ReplicationPolicySpec, 'frequency'> & { frequency?: string } } : B;

/** One request of `route` with a body of the route's request type. */
export function send<R extends RouteSpec>(client: MtlsClient, route: R, params: PathParams<R>, body?: TestBody<RequestOf<R>>, opts?: CallOptions): Promise<AgentResponse<ResponseOf<R>>> {
  return requestRoute(client, route, params, body as RequestBody | undefined, opts);
}

/** One request of `route` with any body: for the tests that send malformed requests on purpose. */
export function sendRaw<R extends RouteSpec>(client: MtlsClient, route: R, params: PathParams<R>, body?: RequestBody, opts?: CallOptions): Promise<AgentResponse<ResponseOf<R>>> {
  return requestRoute(client, route, params, body, opts);
}

// Every agent route that takes a body checks it against the route table's schema before any
// handler runs: a bad body is a 400 naming the field, and nothing changes on the agent. Real
// agent, real mutual TLS; the primary routes are called with an allowed primary's certificate.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { TerminalError } from '../../src/model/errors.ts';
import { NO_FIELDS, type RouteSpec } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { twoHosts, type Cluster } from './cluster.ts';
import { ROUTES, send, sendRaw } from '../support/agent-client.ts';

let cluster: Cluster;
let operator: MtlsClient;
let primary: MtlsClient;

beforeAll(async () => {
  const h = await twoHosts();
  cluster = h.cluster;
  operator = h.b;
  primary = await cluster.client('host-b', 'host-a');
});
afterAll(async () => {
  await cluster?.destroy();
});

const params = { id: 'rel-x', name: 'vm-x', seq: 1, disk: 'os', group: 'g' };
type Schema = { required?: string[]; properties?: Record<string, unknown> };

/** A body each route must refuse, and the field the refusal must name. */
function badBody(route: RouteSpec): { body: object; field: string; says: string } {
  const schema = (route.body ?? NO_FIELDS) as Schema;
  const required = schema.required ?? [];
  if (required.length) return { body: {}, field: required[0], says: 'is required' };
  return { body: { surplus: 1 }, field: 'surplus', says: 'is not a known field' };
}

// Every route but the raw streams (the log upload's PUT and HEAD, checked by their own length and
// seal, and a streamed initial copy's segment PUT, checked frame by frame and by its seal): those with a
// body schema, and those that take none, where any field is unknown.
const withBodies = Object.entries(ROUTES).filter(([, r]) => !(r as RouteSpec).raw) as [string, RouteSpec][];

test('every JSON route of the table is covered, on both the operator and the primary side', () => {
  expect(Object.keys(ROUTES).filter((n) => !withBodies.some(([m]) => m === n)).sort()).toEqual(['uploadInitialSegment', 'uploadLog', 'uploadOffset']);
  expect(withBodies.filter(([, r]) => r.body).length).toBeGreaterThanOrEqual(14);
  expect(withBodies.some(([, r]) => r.caller === 'primary')).toBe(true);
});

for (const [name, route] of withBodies) {
  test(`${name}: ${route.method} ${route.path} refuses a bad body with 400 naming the field`, async () => {
    const client = route.caller === 'primary' ? primary : operator;
    const { body, field, says } = badBody(route);
    const before = (await send(operator, ROUTES.listRelationships, {})).json<unknown[]>();
    const e = await sendRaw(client, route, params, body).catch((x: unknown) => x);
    expect(TerminalError.is(e) && e.code, String(e)).toBe('invalid-argument');
    expect((e as Error).message).toContain(`body field ${field} ${says}`);
    expect((await send(operator, ROUTES.listRelationships, {})).json<unknown[]>()).toEqual(before);
  });
}

test('a wrong type deep inside a body names the whole field path', async () => {
  const e = await sendRaw(operator, ROUTES.createVm, {}, { name: 'v', disks: [{ name: 'os', size: 'big' }] }).catch((x: unknown) => x);
  expect((e as Error).message).toContain('body field disks.0.size must be integer');
  const p = await sendRaw(operator, ROUTES.setVmPower, { name: 'v' }, { power: 'Sideways' }).catch((x: unknown) => x);
  expect((p as Error).message).toContain('body field power must be equal to one of the allowed values');
  const j = await sendRaw(operator, ROUTES.createVm, {}, Buffer.from('{"name": ')).catch((x: unknown) => x);
  expect(TerminalError.is(j) && j.code).toBe('invalid-argument');
  expect((await send(operator, ROUTES.listVms, {})).json<unknown[]>()).toEqual([]);
});

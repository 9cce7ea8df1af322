// Validation of agent API request bodies against the route table's schemas: ajv in strict mode,
// each schema compiled once, the first problem reported with its field path (400).
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { TerminalError } from '../model/errors.ts';
import type { RouteSpec } from './agent-api.ts';

const ajv = new Ajv2020({ strict: true, allErrors: false, allowUnionTypes: true });
const compiled = new WeakMap<object, ValidateFunction>();

/** Returns the body typed as the route declares it, or throws invalid-argument naming the field. */
export function checkBody<T>(route: RouteSpec, body: unknown): T {
  if (!route.body) return body as T;
  let validate = compiled.get(route.body);
  if (!validate) {
    validate = ajv.compile(route.body);
    compiled.set(route.body, validate);
  }
  if (validate(body)) return body as T;
  const e = validate.errors![0];
  const field = e.keyword === 'required' ? `${e.instancePath}/${(e.params as { missingProperty: string }).missingProperty}`
    : e.keyword === 'additionalProperties' ? `${e.instancePath}/${(e.params as { additionalProperty: string }).additionalProperty}`
    : e.instancePath;
  const what = e.keyword === 'additionalProperties' ? 'is not a known field' : e.keyword === 'required' ? 'is required' : e.message ?? 'is invalid';
  throw new TerminalError('invalid-argument', `${route.method} ${route.path}: body field ${field.replace(/^\//, '').replaceAll('/', '.') || '(top)'} ${what}`);
}

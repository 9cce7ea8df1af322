// Turns ajv's raw errors into one readable issue per problem: unknown keys named with the allowed
// ones, enums listed, patterns explained in words, and the anyOf/oneOf/if-then cascades collapsed
// into the single message a person would write.
import type { AnySchemaObject, ErrorObject } from 'ajv/dist/2020.js';
import { formatPath, pointerToSegments, type Segment } from './field-path.ts';
import { didYouMean } from './suggest.ts';

export interface SchemaIssue {
  /** The field the issue is about (printed in the diagnostic). */
  path: Segment[];
  /** The node to point at: the field itself, or its parent when the field is missing. */
  at: Segment[];
  /** `key` points at the map key of the last segment of `at` rather than its value. */
  target: 'key' | 'value';
  summary: string;
  detail: string;
}

type AjvError = ErrorObject & { parentSchema?: AnySchemaObject; data?: unknown; schema?: unknown };

/** A condition from an enclosing `if` (e.g. `type` is `"azure"`), to say when a rule applies. */
interface Condition {
  key: string;
  value: unknown;
  /** True in the `else` branch: the rule applies when the key does NOT have the value. */
  negated: boolean;
}

const whenText = (c: Condition): string => `when ${c.key} is ${c.negated ? 'not ' : ''}${JSON.stringify(c.value)}`;

/** Words for patterns whose schema has no description that explains them. */
const PATTERN_WORDS: Record<string, string> = {
  '^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$': 'up to 63 letters, digits, "-", "_" or ".", starting with a letter or digit',
  '^[a-z0-9]{3,24}$': 'an Azure storage account name: 3 to 24 lower-case letters and digits',
  '^[a-z0-9](?!.*--)[-a-z0-9]{1,61}[a-z0-9]$': 'an Azure container name: 3 to 63 lower-case letters, digits and single "-", starting and ending with a letter or digit',
  '^[-\\w._()]{1,90}$': 'an Azure resource group name: up to 90 letters, digits, "-", "_", ".", "(" or ")"',
  '^[a-z0-9]+$': 'an Azure region name in lower case without spaces, e.g. westeurope',
  '^https://[^\\s/]+(:[0-9]+)?/?$': 'an https URL with a host and an optional port and nothing else, e.g. https://host-b.example:8443',
  '^(0|([1-9]|1[0-2])h)$': '0 (crash-consistent only) or a whole number of hours from 1h to 12h',
  '^([1-9]|1[0-9]|2[0-4])h$': 'a whole number of hours from 1h to 24h, e.g. 4h',
  '^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$': 'a local time window HH:MM-HH:MM in 24-hour time, e.g. 22:00-06:00 (it may cross midnight)',
};

const FORMAT_WORDS: Record<string, string> = {
  'date-time': 'an RFC 3339 time such as 2026-11-23T22:00:00Z',
  ipv4: 'an IPv4 address such as 10.20.0.1',
  ipv6: 'an IPv6 address such as fd00::1',
};

export function describeAjvErrors(raw: readonly ErrorObject[], doc: unknown, roots: Map<string, AnySchemaObject>): SchemaIssue[] {
  const errors = raw as readonly AjvError[];
  const reach = reachability(roots);
  const consumed = new Set<number>();
  const conditions = new Map<number, Condition>();

  // ajv reports a composite keyword's sub-errors immediately before the composite error itself,
  // and each sub-error's parentSchema is an object inside one of the composite's branches.
  const precedingFrom = (i: number, branches: unknown): number[] => {
    const e = errors[i];
    const inside = reach(branches);
    const out: number[] = [];
    for (let j = i - 1; j >= 0; j--) {
      const s = errors[j];
      const under = s.instancePath === e.instancePath || s.instancePath.startsWith(`${e.instancePath}/`);
      if (!under || !s.parentSchema || !inside.has(s.parentSchema)) break;
      out.push(j);
    }
    return out;
  };

  errors.forEach((e, i) => {
    if (e.keyword === 'anyOf' || e.keyword === 'oneOf') {
      for (const j of precedingFrom(i, e.schema)) consumed.add(j);
    } else if (e.keyword === 'if') {
      const failing = (e.params as { failingKeyword: 'then' | 'else' }).failingKeyword;
      const cond = conditionOf(e.parentSchema?.if, failing === 'else');
      for (const j of precedingFrom(i, e.parentSchema?.[failing])) if (cond) conditions.set(j, cond);
      consumed.add(i);
    }
  });
  // A value of the wrong type makes every other complaint about the same node noise.
  const typeErrorAt = new Set(errors.filter((e) => e.keyword === 'type').map((e) => e.instancePath));
  const compositeAt = new Set(errors.filter((e) => e.keyword === 'oneOf').map((e) => e.instancePath));

  const issues: SchemaIssue[] = [];
  errors.forEach((e, i) => {
    if (consumed.has(i)) return;
    if (e.keyword !== 'type' && typeErrorAt.has(e.instancePath)) return;
    if ((e.keyword === 'minProperties' || e.keyword === 'maxProperties') && compositeAt.has(e.instancePath)) return;
    issues.push(...phrase(e, pointerToSegments(e.instancePath, doc), conditions.get(i)));
  });
  return dedupe(issues);
}

function phrase(e: AjvError, path: Segment[], cond: Condition | undefined): SchemaIssue[] {
  const field = (p: Segment[]) => formatPath(p) || 'the document';
  const about = describe(e.parentSchema);
  const one = (summary: string, detail: string, at = path, target: 'key' | 'value' = 'value', p = path): SchemaIssue[] =>
    [{ path: p, at, target, summary, detail }];
  const params = e.params as Record<string, unknown>;

  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(params.additionalProperty);
      const allowed = Object.keys((e.parentSchema?.properties as object | undefined) ?? {});
      const p = [...path, key];
      return one(`unknown field "${key}"`,
        `allowed fields in ${field(path)}: ${allowed.join(', ') || '(none)'}${didYouMean(key, allowed)}`, p, 'key', p);
    }
    case 'required': {
      const missing = String(params.missingProperty);
      const when = cond ? `; required ${whenText(cond)}` : '';
      const desc = describe((e.parentSchema?.properties as Record<string, AnySchemaObject> | undefined)?.[missing]);
      return one(`missing required field "${missing}"`,
        `${field(path)} must have "${missing}"${when}${desc ? ` (${desc})` : ''}`, path, 'key', [...path, missing]);
    }
    case 'type':
      return one(`wrong type: expected ${article(String(params.type))}, got ${typeName(e.data)}`,
        about || `${field(path)} must be ${article(String(params.type))}`);
    case 'enum': {
      const allowed = (params.allowedValues as unknown[]).map((v) => String(v));
      return one(`invalid value ${show(e.data)}`,
        `expected one of: ${allowed.join(', ')}${typeof e.data === 'string' ? didYouMean(e.data, allowed) : ''}`);
    }
    case 'const': {
      if (formatPath(path) === 'apiVersion') {
        return one(`unsupported apiVersion ${show(e.data)}`, `expected apiVersion: ${String(params.allowedValue)}`);
      }
      return one(`invalid value ${show(e.data)}`, `expected ${show(params.allowedValue)}`);
    }
    case 'pattern': {
      const pattern = String(params.pattern);
      const words = PATTERN_WORDS[pattern] ?? about;
      return one(`invalid value ${show(e.data)}`, words ? `expected ${lowerFirst(words)}` : `must match the pattern ${pattern}`);
    }
    case 'format': {
      const words = FORMAT_WORDS[String(params.format)] ?? `a ${String(params.format)}`;
      return one(`invalid value ${show(e.data)}`, `expected ${words}`);
    }
    case 'minimum': case 'maximum': case 'exclusiveMinimum': case 'exclusiveMaximum':
      return one(`value ${show(e.data)} is out of range`,
        `${field(path)} must be ${String(params.comparison)} ${String(params.limit)}${about ? ` (${about})` : ''}`);
    case 'minLength':
      return one(Number(params.limit) === 1 ? 'empty string' : 'string is too short',
        `${field(path)} must have at least ${String(params.limit)} characters`);
    case 'maxLength':
      return one('string is too long', `${field(path)} must have at most ${String(params.limit)} characters`);
    case 'minItems':
      return one(Array.isArray(e.data) && e.data.length === 0 ? 'empty list' : 'too few items',
        `${field(path)} must have at least ${String(params.limit)} item${Number(params.limit) === 1 ? '' : 's'}`);
    case 'maxItems':
      return one('too many items', `${field(path)} must have at most ${String(params.limit)} items`);
    case 'uniqueItems': {
      const later = Math.max(Number(params.i), Number(params.j));
      const earlier = Math.min(Number(params.i), Number(params.j));
      const p = [...path, later];
      return one(`duplicate item ${show((e.data as unknown[])[later])}`, `the same value is already at ${formatPath([...path, earlier])}`, p, 'value', p);
    }
    case 'minProperties': {
      const allowed = Object.keys((e.parentSchema?.properties as object | undefined) ?? {});
      return one('empty mapping', `${field(path)} needs at least ${String(params.limit)} of: ${allowed.join(', ')}`);
    }
    case 'maxProperties':
      return one('too many fields', `${field(path)} may have at most ${String(params.limit)} fields`);
    case 'oneOf':
      return oneOfIssue(e, path);
    case 'anyOf': {
      const alternatives = about || alternativesOf(e.schema);
      return one(`invalid value ${show(e.data)}`, `expected ${lowerFirst(alternatives)}`);
    }
    case 'not':
      return notIssues(e, path, cond);
    default:
      return one(e.message ?? `failed ${e.keyword}`, about || `see the schema for ${field(path)}`);
  }
}

/** `oneOf: [{required: [script]}, {required: [manual]}]`: "exactly one of" in words. */
function oneOfIssue(e: AjvError, path: Segment[]): SchemaIssue[] {
  const branches = (e.schema as AnySchemaObject[]) ?? [];
  const keys = branches.map((b) => (Array.isArray(b.required) && b.required.length === 1 && Object.keys(b).length === 1 ? String(b.required[0]) : undefined));
  const passing = (e.params as { passingSchemas: number[] | null }).passingSchemas;
  if (keys.every((k) => k !== undefined)) {
    const names = keys as string[];
    if (passing === null) {
      return [{ path, at: path, target: 'key', summary: `needs one of ${names.map((n) => `"${n}"`).join(' or ')}`, detail: `${formatPath(path) || 'the document'} must have exactly one of: ${names.join(', ')}` }];
    }
    const both = passing.map((i) => names[i]);
    const p = [...path, both[both.length - 1]];
    return [{ path: p, at: p, target: 'key', summary: `${both.map((n) => `"${n}"`).join(' and ')} cannot be combined`, detail: `use exactly one of: ${names.join(', ')}` }];
  }
  return [{ path, at: path, target: 'value', summary: 'value matches none or several of the allowed forms', detail: describe(e.parentSchema) || 'expected exactly one of the allowed forms' }];
}

/** `not: {required: [a, b]}` (a and b exclusive) and `not: {anyOf: [{required: [x]}, ...]}` (x forbidden). */
function notIssues(e: AjvError, path: Segment[], cond: Condition | undefined): SchemaIssue[] {
  const not = (e.schema ?? {}) as AnySchemaObject;
  const data = (e.data ?? {}) as Record<string, unknown>;
  if (Array.isArray(not.required) && Object.keys(not).length === 1) {
    const names = (not.required as string[]);
    const p = [...path, names[names.length - 1]];
    return [{ path: p, at: p, target: 'key', summary: `${names.map((n) => `"${n}"`).join(' and ')} cannot be combined`, detail: `use only one of: ${names.join(', ')}` }];
  }
  if (Array.isArray(not.anyOf) && not.anyOf.every((b: AnySchemaObject) => Array.isArray(b.required))) {
    const forbidden = (not.anyOf as AnySchemaObject[]).flatMap((b) => b.required as string[]);
    const present = forbidden.filter((k) => Object.hasOwn(data, k));
    const why = !cond ? '' : cond.negated ? ` only allowed when ${cond.key} is ${JSON.stringify(cond.value)}` : ` not allowed ${whenText(cond)}`;
    return present.map((k) => {
      const p = [...path, k];
      return { path: p, at: p, target: 'key' as const, summary: `field "${k}" is${why || ' not allowed'}`, detail: `remove "${k}" from ${formatPath(path) || 'the document'}` };
    });
  }
  return [{ path, at: path, target: 'value', summary: 'value has a forbidden form', detail: describe(e.parentSchema) || 'see the schema for this field' }];
}

/** `if: {properties: {type: {const: azure}}}` → `when type is "azure"`. */
function conditionOf(ifSchema: unknown, negated: boolean): Condition | undefined {
  const props = (ifSchema as AnySchemaObject | undefined)?.properties as Record<string, AnySchemaObject> | undefined;
  if (!props) return undefined;
  const entries = Object.entries(props).filter(([, s]) => 'const' in s);
  if (entries.length !== 1) return undefined;
  const [key, s] = entries[0];
  return { key, value: s.const, negated };
}

const reachabilityByRoots = new WeakMap<Map<string, AnySchemaObject>, (start: unknown) => Set<object>>();

/** The set of schema objects reachable from `start`, following $ref across schema files (memoised). */
function reachability(roots: Map<string, AnySchemaObject>): (start: unknown) => Set<object> {
  let r = reachabilityByRoots.get(roots);
  if (!r) reachabilityByRoots.set(roots, (r = buildReachability(roots)));
  return r;
}

function buildReachability(roots: Map<string, AnySchemaObject>): (start: unknown) => Set<object> {
  const cache = new WeakMap<object, Set<object>>();
  const owner = new WeakMap<object, string>();
  for (const [id, root] of roots) {
    const stack: unknown[] = [root];
    while (stack.length) {
      const v = stack.pop();
      if (v === null || typeof v !== 'object' || owner.has(v)) continue;
      owner.set(v, id);
      stack.push(...Object.values(v));
    }
  }
  const resolve = (ref: string, base: string): object | undefined => {
    const url = new URL(ref, base);
    const hash = decodeURIComponent(url.hash.replace(/^#/, ''));
    url.hash = '';
    let node: unknown = roots.get(url.href);
    for (const part of hash.split('/').slice(1)) node = (node as Record<string, unknown> | undefined)?.[part.replace(/~1/g, '/').replace(/~0/g, '~')];
    return node !== null && typeof node === 'object' ? node : undefined;
  };
  return (start) => {
    if (start === null || typeof start !== 'object') return new Set();
    const hit = cache.get(start);
    if (hit) return hit;
    const seen = new Set<object>();
    const stack: object[] = [start];
    while (stack.length) {
      const v = stack.pop()!;
      if (seen.has(v)) continue;
      seen.add(v);
      for (const [k, child] of Object.entries(v)) {
        if (k === '$ref' && typeof child === 'string') {
          const target = resolve(child, owner.get(v) ?? 'https://drsite.dev/schemas/');
          if (target) stack.push(target);
        } else if (child !== null && typeof child === 'object') {
          stack.push(child);
        }
      }
    }
    cache.set(start, seen);
    return seen;
  };
}

function alternativesOf(branches: unknown): string {
  const parts: string[] = [];
  for (const b of (branches as AnySchemaObject[]) ?? []) {
    if (Array.isArray(b.enum)) parts.push(...b.enum.map((v: unknown) => JSON.stringify(v)));
    else if ('const' in b) parts.push(JSON.stringify(b.const));
    else if (typeof b.format === 'string') parts.push(FORMAT_WORDS[b.format] ?? b.format);
    else if (typeof b.$ref === 'string') parts.push(b.$ref.replace(/^.*\//, ''));
  }
  return parts.length ? `one of: ${parts.join(', ')}` : 'one of the allowed forms';
}

/** The schema's description without its `@default` note, or ''. */
function describe(schema: AnySchemaObject | undefined): string {
  const d = typeof schema?.description === 'string' ? schema.description : '';
  return d.replace(/\s*@default.*$/s, '').trim();
}

function dedupe(issues: SchemaIssue[]): SchemaIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${formatPath(i.path)}\u0000${i.summary}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** A value for a message: short, and never a whole mapping or list. */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return typeName(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number';
  return article(typeof v);
}

function article(type: string): string {
  const words: Record<string, string> = { object: 'a mapping', array: 'a list', integer: 'an integer', string: 'a string', boolean: 'a boolean (true or false)', number: 'a number', null: 'null' };
  return type.split(',').map((t) => words[t] ?? t).join(' or ');
}

const lowerFirst = (s: string): string => (/^[A-Z]([a-z]| [A-Z])/.test(s) ? s[0].toLowerCase() + s.slice(1) : s);

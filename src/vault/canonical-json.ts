// Canonical JSON: one text per value, whatever the key order, so "did the spec change?" is a
// string comparison and a generation moves only on a real change.

import { TerminalError } from '../model/errors.ts';

/** JSON with object keys sorted at every depth; undefined members dropped as JSON.stringify does. */
export function canonicalJson(value: unknown, what = 'value'): string {
  const text = JSON.stringify(normalise(value, what));
  if (text === undefined) throw new TerminalError('invalid-argument', `${what} is not representable as JSON`);
  return text;
}

function normalise(v: unknown, path: string): unknown {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    // JSON.stringify would silently turn these into null, which would hide a bug in the caller.
    if (!Number.isFinite(v)) throw new TerminalError('invalid-argument', `${path} is ${v}, which JSON cannot hold`);
    return v;
  }
  if (typeof v === 'undefined') return undefined;
  if (typeof v === 'bigint' || typeof v === 'function' || typeof v === 'symbol') {
    throw new TerminalError('invalid-argument', `${path} is a ${typeof v}, which JSON cannot hold`);
  }
  const withToJson = v as { toJSON?: () => unknown };
  if (typeof withToJson.toJSON === 'function') return normalise(withToJson.toJSON(), path);
  if (Array.isArray(v)) return v.map((x, i) => normalise(x, `${path}[${i}]`) ?? null);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v as object).sort()) {
    const x = normalise((v as Record<string, unknown>)[k], `${path}.${k}`);
    if (x !== undefined) out[k] = x;
  }
  return out;
}

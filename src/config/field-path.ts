// Field paths inside a document: the segment form every stage works with, and the one printed
// form (`spec.groups[1].vms[0]`) that diagnostics show.

/** A map key (string) or an array index (number). */
export type Segment = string | number;

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$-]*$/;

/** `['spec', 'groups', 1, 'vms', 0]` → `spec.groups[1].vms[0]`; odd keys are quoted: `labels["a.b/c"]`. */
export function formatPath(segments: readonly Segment[]): string {
  let out = '';
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (IDENTIFIER.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

/**
 * A JSON pointer from ajv (`/spec/groups/1`) → segments. A segment is an index only when the value
 * at that level is an array, so a map key that happens to be numeric stays a key.
 */
export function pointerToSegments(pointer: string, root: unknown): Segment[] {
  if (pointer === '') return [];
  const raw = pointer.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const out: Segment[] = [];
  let cur: unknown = root;
  for (const p of raw) {
    if (Array.isArray(cur) && /^(0|[1-9][0-9]*)$/.test(p)) {
      const i = Number(p);
      out.push(i);
      cur = cur[i];
    } else {
      out.push(p);
      cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[p] : undefined;
    }
  }
  return out;
}

/** The value at `segments`, or undefined when any step is missing. */
export function valueAt(root: unknown, segments: readonly Segment[]): unknown {
  let cur = root;
  for (const s of segments) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[s];
  }
  return cur;
}

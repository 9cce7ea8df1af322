// Parses one YAML text into plain documents that remember where every node came from, so that
// later stages (schema, rules) can point a diagnostic at file:line:column of the offending field.
import {
  isAlias, isMap, isScalar, isSeq, LineCounter, parseAllDocuments, visit,
  type Document, type Node,
} from 'yaml';
import type { Diagnostic } from '../model/diagnostics.ts';
import { formatPath, type Segment } from './field-path.ts';

export interface Position {
  line: number;
  column: number;
}

export interface SourceDocument {
  file: string;
  /** 0-based index of the document in its file (empty documents count). */
  index: number;
  /** The document as plain JSON-like data (no aliases, no cycles, finite numbers). */
  value: unknown;
  /** Where the document's first node starts. */
  start: Position;
  /**
   * Where the node at `path` starts. `key` asks for the map key of the last segment (for "unknown
   * field" style messages). A path that does not exist resolves to its deepest existing ancestor.
   */
  locate(path: readonly Segment[], target?: 'key' | 'value'): Position;
}

export interface ParsedSource {
  documents: SourceDocument[];
  diagnostics: Diagnostic[];
  /** `Kind/name` of documents dropped for YAML errors: references to them are not "dangling". */
  brokenKeys: string[];
}

/** Alias expansion cap: stops "billion laughs" documents (yaml's own guard, made explicit). */
const MAX_ALIAS_COUNT = 100;

export function parseYamlSource(file: string, text: string): ParsedSource {
  const diagnostics: Diagnostic[] = [];
  const out: ParsedSource = { documents: [], diagnostics, brokenKeys: [] };
  const fileError = (summary: string, detail: string): ParsedSource => {
    diagnostics.push({ severity: 'error', summary, detail, file, line: 0, column: 0, path: '' });
    return out;
  };
  if (text.includes('\u0000')) return fileError('not a text file', 'the file contains NUL bytes; expected YAML text');
  if (text.trim() === '') return fileError('empty file', 'expected one or more YAML documents with apiVersion, kind, metadata and spec');

  const lc = new LineCounter();
  const at = (offset: number): Position => {
    const p = lc.linePos(Math.max(0, offset));
    return { line: p.line, column: p.col };
  };
  let docs: Document.Parsed[];
  try {
    // logLevel 'error': the library must not print to the console; its warnings become diagnostics.
    docs = parseAllDocuments(text, { keepSourceTokens: true, lineCounter: lc, prettyErrors: false, logLevel: 'error' }) as Document.Parsed[];
  } catch (e) {
    return fileError('YAML could not be parsed', (e as Error).message);
  }
  if (docs.length === 0) return fileError('no documents', 'the file holds only comments; expected one or more YAML documents');

  let nonEmpty = 0;
  docs.forEach((doc, index) => {
    const diag = (pos: Position, summary: string, detail: string, path = '', severity: 'error' | 'warning' = 'error') =>
      diagnostics.push({ severity, summary, detail, file, line: pos.line, column: pos.column, path });
    const contents = doc.contents as Node | null;
    const start = at(contents?.range?.[0] ?? 0);
    for (const w of doc.warnings) diag(at(w.pos[0]), `YAML: ${w.message}`, 'the value is read as a plain string', '', 'warning');
    if (contents === null || isEmptyScalar(contents)) return;
    nonEmpty++;
    if (doc.errors.length > 0) {
      // The parser often reports one mistake twice at the same spot (e.g. a mis-indented key is
      // both "nested mappings" and "implicit keys"): the first says it.
      const spots = new Set<number>();
      for (const e of doc.errors) {
        if (spots.has(e.pos[0])) continue;
        spots.add(e.pos[0]);
        const summary = e.code === 'RESOURCE_EXHAUSTION' ? 'the document is nested too deeply or too large' : e.message;
        diag(at(e.pos[0]), `invalid YAML: ${summary}`, yamlErrorHint(e.code));
      }
      const key = bestEffortKey(doc);
      if (key) out.brokenKeys.push(key);
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (e) {
      diag(aliasTrouble(doc, at) ?? start, `invalid YAML: ${(e as Error).message}`,
        `aliases must refer to an earlier anchor in the same document and expand to at most ${MAX_ALIAS_COUNT} nodes`);
      return;
    }
    const locate = (path: readonly Segment[], target: 'key' | 'value' = 'value'): Position => {
      const off = locateOffset(doc, path, target);
      return off === undefined ? start : at(off);
    };
    const bad = firstNonJsonValue(value);
    if (bad) {
      diag(locate(bad.path), bad.summary, bad.detail, formatPath(bad.path));
      return;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      diag(start, 'document is not a mapping',
        `expected a mapping with apiVersion, kind, metadata and spec; got ${value === null ? 'null' : Array.isArray(value) ? 'a sequence' : `a ${typeof value}`}`);
      return;
    }
    out.documents.push({ file, index, value, start, locate });
  });
  if (nonEmpty === 0) return fileError('no documents', 'the file holds only empty documents; expected one or more YAML documents');
  return out;
}

function yamlErrorHint(code: string): string {
  switch (code) {
    case 'DUPLICATE_KEY': return 'each key may appear once in a mapping';
    case 'TAB_AS_INDENT': return 'indent with spaces, not tabs';
    case 'BAD_INDENT': return 'check the indentation of this line against its parent';
    case 'RESOURCE_EXHAUSTION': return 'flatten the document: nesting this deep cannot be parsed';
    default: return 'fix the YAML syntax at this position';
  }
}

/** Offset of the node (or key) at `path`, following aliases; the deepest existing ancestor otherwise. */
function locateOffset(doc: Document.Parsed, path: readonly Segment[], target: 'key' | 'value'): number | undefined {
  let node: unknown = doc.contents;
  let found: number | undefined = rangeStart(node);
  for (let i = 0; i < path.length; i++) {
    for (let hops = 0; isAlias(node) && hops < 8; hops++) node = node.resolve(doc);
    const seg = path[i];
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => keyText(p.key) === String(seg));
      if (!pair) return found;
      const keyOff = rangeStart(pair.key);
      const v = pair.value;
      const emptyValue = v === null || isEmptyScalar(v);
      if (last && target === 'key') return keyOff ?? found;
      if (emptyValue) return keyOff ?? found;
      node = v;
      found = rangeStart(v) ?? found;
    } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
      node = node.items[seg];
      found = rangeStart(node) ?? found;
    } else {
      return found;
    }
  }
  return found;
}

/** `key:` with nothing after it, or a bare `---`: a null scalar with no source text. */
function isEmptyScalar(node: unknown): boolean {
  return isScalar(node) && node.value === null && (!node.range || node.range[0] === node.range[1]);
}

function rangeStart(node: unknown): number | undefined {
  const r = (node as { range?: [number, number, number] } | null)?.range;
  return r ? r[0] : undefined;
}

function keyText(key: unknown): string {
  if (isScalar(key)) return String(key.value);
  return String(key);
}

/** First alias that does not resolve, to point a failed conversion at it. */
function aliasTrouble(doc: Document.Parsed, at: (o: number) => Position): Position | undefined {
  let pos: Position | undefined;
  visit(doc, {
    Alias(_, node) {
      if (!node.resolve(doc) && node.range) {
        pos = at(node.range[0]);
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return pos;
}

/** Kind and name of a document with YAML errors, if they can still be read. */
function bestEffortKey(doc: Document.Parsed): string | undefined {
  try {
    const v = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as { kind?: unknown; metadata?: { name?: unknown } } | null;
    if (typeof v?.kind === 'string' && typeof v.metadata?.name === 'string') return `${v.kind}/${v.metadata.name}`;
  } catch { /* nothing readable: the YAML error already says why */ }
  return undefined;
}

/**
 * The first value that plain JSON cannot hold: a cycle (an alias inside its own anchor), a number
 * that is not finite or not a safe integer, or a non-JSON object (`!!binary`, `!!set`, ...).
 * Iterative, so a deeply nested document cannot overflow the stack.
 */
function firstNonJsonValue(root: unknown): { path: Segment[]; summary: string; detail: string } | undefined {
  type Frame = { value: unknown; path: Segment[]; leave?: object };
  const stack: Frame[] = [{ value: root, path: [] }];
  const onPath = new Set<object>();
  while (stack.length > 0) {
    const f = stack.pop()!;
    if (f.leave) {
      onPath.delete(f.leave);
      continue;
    }
    const v = f.value;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return { path: f.path, summary: 'number is not finite', detail: 'expected a finite number' };
      if (Number.isInteger(v) && !Number.isSafeInteger(v)) {
        return { path: f.path, summary: 'number is too large', detail: `expected an integer between ${Number.MIN_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER}` };
      }
      continue;
    }
    if (typeof v === 'bigint') return { path: f.path, summary: 'number is too large', detail: `expected at most ${Number.MAX_SAFE_INTEGER}` };
    if (v === null || typeof v !== 'object') continue;
    if (onPath.has(v)) return { path: f.path, summary: 'recursive alias', detail: 'an alias may not refer to an anchor that contains it' };
    const proto = Object.getPrototypeOf(v);
    if (!Array.isArray(v) && proto !== Object.prototype && proto !== null) {
      return { path: f.path, summary: 'unsupported YAML value', detail: 'expected a string, number, boolean, null, mapping or sequence (tags such as !!binary or !!set are not supported)' };
    }
    onPath.add(v);
    stack.push({ value: undefined, path: f.path, leave: v });
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ value: v[i], path: [...f.path, i] });
    } else {
      const entries = Object.entries(v);
      for (let i = entries.length - 1; i >= 0; i--) stack.push({ value: entries[i][1], path: [...f.path, entries[i][0]] });
    }
  }
  return undefined;
}

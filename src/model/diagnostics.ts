// Diagnostics for user input: accumulated, never thrown (STYLE.md, "Errors and diagnostics").

export type Severity = 'error' | 'warning';

export interface Diagnostic {
  severity: Severity;
  /** One line: what is wrong. */
  summary: string;
  /** What was expected, or how to fix it. */
  detail: string;
  file: string;
  /** 1-based; 0 when the file itself is the subject (unreadable, empty). */
  line: number;
  column: number;
  /** JSON-pointer-like field path inside the document, e.g. `spec.replicaServer.port`. */
  path: string;
}

export const hasErrors = (ds: readonly Diagnostic[]): boolean => ds.some((d) => d.severity === 'error');

/** `file:line:column: error: summary (at path): detail` — the one printed form. */
export function formatDiagnostic(d: Diagnostic): string {
  const where = `${d.file}:${d.line}:${d.column}`;
  const at = d.path ? ` (at ${d.path})` : '';
  const detail = d.detail ? `: ${d.detail}` : '';
  return `${where}: ${d.severity}: ${d.summary}${at}${detail}`;
}

// The one error the constructs throw on bad props or a bad tree: every message is prefixed with
// where the problem was declared (a construct path, or file:line:column for YAML input).
import type { Diagnostic } from '../src/model/diagnostics.ts';
import { TerminalError } from '../src/model/errors.ts';

/**
 * Invalid declarations reaching a construct or a synth. Terminal (retrying cannot fix input); the
 * structured `diagnostics` let the CLI print them like `drsite validate` does.
 */
export class ConstructValidationError extends TerminalError {
  readonly diagnostics: readonly Diagnostic[];
  constructor(diagnostics: readonly Diagnostic[]) {
    const errors = diagnostics.filter((d) => d.severity === 'error');
    super('invalid-argument', errors.map(describeDiagnostic).join('\n'));
    this.name = 'ConstructValidationError';
    this.diagnostics = diagnostics;
  }
}

/**
 * `where: summary (at path): detail`. A construct has no line: line 0 marks a construct path
 * (or a whole file), which is then printed alone.
 */
export function describeDiagnostic(d: Diagnostic): string {
  const where = d.line > 0 ? `${d.file}:${d.line}:${d.column}` : d.file;
  const at = d.path ? ` (at ${d.path})` : '';
  const detail = d.detail ? `: ${d.detail}` : '';
  return `${where}: ${d.summary}${at}${detail}`;
}

/** A diagnostic about a construct (no line and column). */
export function constructDiagnostic(constructPath: string, summary: string, detail: string, path = '', severity: Diagnostic['severity'] = 'error'): Diagnostic {
  return { severity, summary, detail, file: constructPath, line: 0, column: 0, path };
}

// How the CLI talks to people and machines: tables for people, `--output json` for machines,
// and errors as one line (a stack only with --debug).
import Table from 'cli-table3';
import { isRecoverable, RetryableError, TerminalError } from '../model/errors.ts';

export type OutputFormat = 'text' | 'json';

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: Io = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
};

export function printJson(io: Io, value: unknown): void {
  io.out(JSON.stringify(value, null, 2));
}

export function renderTable(head: string[], rows: (string | number)[][]): string {
  const table = new Table({
    head,
    style: { head: [], border: [], compact: true },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const r of rows) table.push(r.map(String));
  return table.toString();
}

/** One line for an operator: what failed and whether drsite will retry it by itself. */
export function describeError(e: unknown, debug: boolean): string {
  if (debug && e instanceof Error && e.stack) return e.stack;
  const msg = e instanceof Error ? e.message : String(e);
  if (TerminalError.is(e)) return `error (${e.code}): ${msg}`;
  if (RetryableError.is(e)) return `error (${e.code}, retryable): ${msg}`;
  return isRecoverable(e) ? `error (retryable): ${msg}` : `error: ${msg}`;
}

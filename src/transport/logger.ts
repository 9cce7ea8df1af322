// A tiny injectable structured logger. Transport code logs refusals and faults through it so tests
// can assert what an operator would read; the default writes one JSON object per line to stderr.

import type { LogFields, Logger } from '../model/logger.ts';

export type { LogFields, Logger } from '../model/logger.ts';
export { silentLogger } from '../model/logger.ts';

function line(level: string, msg: string, fields?: LogFields): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
}

/** JSON lines on stderr: `{"time","level","msg",...fields}`. */
export const stderrLogger: Logger = {
  info: (msg, fields) => line('info', msg, fields),
  warn: (msg, fields) => line('warn', msg, fields),
  error: (msg, fields) => line('error', msg, fields),
};



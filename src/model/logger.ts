// The logger port: structured lines an operator reads. The engine and the agent log through it;
// transport/logger.ts has the stderr implementation, tests pass silentLogger or a recorder.

export type LogFields = Readonly<Record<string, unknown>>;

export interface Logger {
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

export const silentLogger: Logger = {
  info: () => {},
  warn: () => {},
  error: () => {},
};

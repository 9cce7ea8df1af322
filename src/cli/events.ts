// `drsite events [name]`: what happened to the declared resources, newest first (health changes,
// replication errors, operator actions, recovery plans), as the reconciler recorded it.
import { TerminalError } from '../model/errors.ts';
import { Vault } from '../vault/vault.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, renderTable, type Io } from './output.ts';

const time = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

export async function eventsCommand(name: string | undefined, opts: { kind?: string; limit: string }, g: GlobalOptions, io: Io): Promise<number> {
  const limit = Number(opts.limit);
  if (!Number.isSafeInteger(limit) || limit < 1) throw new TerminalError('invalid-argument', `--limit ${opts.limit}: a positive whole number`);
  const vault = Vault.open(g.vault);
  try {
    const events = vault.listEvents({ limit, ...(opts.kind && { kind: opts.kind }), ...(name && { name }) });
    if (g.output === 'json') printJson(io, events);
    else if (!events.length) io.out(name ? `No events for ${name}.` : 'No events yet.');
    else {
      io.out(renderTable(['Last seen', 'Type', 'Reason', 'Object', 'Count', 'Message'],
        events.map((e) => [time(e.lastTimestamp), e.type, e.reason, `${e.kind}/${e.name}`, String(e.count), e.message])));
    }
    return 0;
  } finally {
    vault.close();
  }
}

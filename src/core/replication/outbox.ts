// A relationship's outbox: one folder per sealed sequence (`<12 digits>/<disk>.hrl`), kept until
// the replica reports that sequence applied.
import { readdir } from 'node:fs/promises';

/** The sealed sequences in `outbox`, oldest first; none when the folder does not exist yet. */
export async function outboxSequences(outbox: string): Promise<number[]> {
  try {
    return (await readdir(outbox)).filter((n) => /^\d{12}$/.test(n)).map(Number).sort((a, b) => a - b);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

// `drsite certs`: a CA and one certificate per host (and the operator identity the CLI and the
// reconciler present to agents), idempotent.
import { initCertificates } from '../transport/certs.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, type Io } from './output.ts';

export const OPERATOR_NAME = 'drsite-operator';

export async function certsCommand(hosts: string[], opts: { dir: string }, g: GlobalOptions, io: Io): Promise<number> {
  const result = await initCertificates(opts.dir, [...new Set([...hosts, OPERATOR_NAME])]);
  if (g.output === 'json') printJson(io, { dir: opts.dir, ...result });
  else {
    io.out(`${result.caCreated ? 'Created' : 'Kept'} CA in ${opts.dir}/ca.crt`);
    for (const h of result.issued) io.out(`Issued ${opts.dir}/${h}.crt`);
    for (const h of result.kept) io.out(`Kept ${opts.dir}/${h}.crt (valid)`);
  }
  return 0;
}

// The Site port is the model's (model/site.ts); the drivers here implement it: HostSite (an
// agent over HTTPS with mutual TLS, embedded or remote) and AzureSite (a container, in-process).
export type { CycleOutcome, FailoverContext, FailoverOutcome, Site, SiteSnapshot, SiteVm, TerraformOutput } from '../model/site.ts';
export { OPERATOR_NAME } from '../model/site.ts';
import { TerminalError } from '../model/errors.ts';

/** The refusal of a verb a kind of site does not do. */
export function notOnThisSite(site: string, verb: string, why: string): never {
  throw new TerminalError('invalid-argument', `${verb} is not something ${site} can do (${why})`);
}

// The demo's sample VMs are created where they are missing from every site, not just from their
// home site: after a failover moved web-01 to site-b, a restart must not make a second web-01 at
// home. Embedded sites of a quickstart copy, in this process (real agents over mutual TLS).
import { afterAll, beforeAll, expect, test } from 'vitest';
import { loadDesiredState } from '../../src/config/index.ts';
import { ensureSampleVms, findSampleVms } from '../../src/demo/sample-vms.ts';
import { openSites, type SiteSet } from '../../src/sites/open-sites.ts';
import { quickstart, type Quickstart } from '../e2e/helpers.ts';

let q: Quickstart;
let sites: SiteSet;
beforeAll(async () => {
  q = await quickstart();
  const loaded = await loadDesiredState(['qs'], { cwd: q.root });
  if (!loaded.ok) throw new Error('quickstart does not load');
  sites = await openSites(loaded.state, { stateDir: q.state, cwd: q.root, schedule: false });
});
afterAll(async () => {
  await sites?.close();
  q?.cleanup();
});

test('a sample VM that runs on another site is not created again at home', async () => {
  const sample = (await findSampleVms([`${q.root}/qs`]))!;
  expect(sample.site).toBe('site-a');
  const a = sites.get('site-a');
  const b = sites.get('site-b');
  // web-01 as a failover leaves it: on site-b, not on site-a.
  const web = sample.vms.find((v) => v.name === 'web-01')!;
  await b.createVm({ name: web.name, disks: web.disks, adapters: web.adapters, power: 'Off' });

  expect(await ensureSampleVms(a, sample, [...sites.sites.values()])).toEqual(['db-01']);
  expect((await a.vms()).map((v) => v.name)).toEqual(['db-01']);
  // Nothing missing any more: nothing created.
  expect(await ensureSampleVms(a, sample, [...sites.sites.values()])).toEqual([]);
});

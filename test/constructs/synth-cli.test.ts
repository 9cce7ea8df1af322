// `drsite synth` (src/cli/synth.ts, which loads constructs/synth.ts at runtime) and the cdktf app
// of examples/cdk run as a real process, the way `cdktf synth` runs it.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadDesiredState } from '../../src/config/index.ts';
import { synthCommand } from '../../src/cli/synth.ts';
import { loadConstructs, provideTerraform, type ConstructsModule } from '../../src/model/terraform.ts';
import * as constructsSynth from '../../constructs/synth.ts';
import { byName, QUICKSTART_DIR, readTerraform, tempDirs, yamlQuickstart } from './helpers.ts';

const tmp = tempDirs();
afterAll(() => tmp.cleanup());

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s: string) => void out.push(s), err: (s: string) => void err.push(s) }, out, err };
}

describe('drsite synth', () => {
  it('--target azure-site-recovery writes cdk.tf.json under --out and reports resources by type (json)', async () => {
    const out = await tmp.make();
    const c = capture();
    const code = await synthCommand([QUICKSTART_DIR], { target: 'azure-site-recovery', out }, { output: 'json' }, c.io);
    expect(code).toBe(0);
    const report = JSON.parse(c.out.join('')) as { ok: boolean; file: string; resources: Record<string, number>; diagnostics: { severity: string }[] };
    expect(report.ok).toBe(true);
    expect(report.file).toBe(join(out, 'stacks', 'azure-site-recovery', 'cdk.tf.json'));
    expect(report.resources).toEqual({
      azurerm_recovery_services_vault: 1,
      azurerm_site_recovery_services_vault_hyperv_site: 2,
      azurerm_site_recovery_hyperv_replication_policy: 1,
      azurerm_site_recovery_hyperv_replication_policy_association: 1,
      azurerm_site_recovery_hyperv_network_mapping: 2,
      azurerm_site_recovery_replication_recovery_plan: 1,
    });
    // Script arguments cannot be expressed in Site Recovery: warned, not fatal.
    expect(report.diagnostics.map((d) => d.severity)).toEqual(['warning', 'warning', 'warning']);
    const tf = readTerraform(report.file);
    expect(byName(tf, 'azurerm_site_recovery_hyperv_replication_policy', 'every-30s').attrs.replication_interval_in_seconds).toBe(30);
  });

  it('prints a summary table in text mode', async () => {
    const c = capture();
    const code = await synthCommand([QUICKSTART_DIR], { target: 'azure-site-recovery', out: await tmp.make(), vaultName: 'qs-vault' }, { output: 'text' }, c.io);
    expect(code).toBe(0);
    const text = c.out.join('\n');
    expect(text).toMatch(/azurerm_site_recovery_services_vault_hyperv_site\s*│\s*2/);
    expect(text).toMatch(/Wrote .*cdk\.tf\.json: 8 resources for Azure Site Recovery\./);
  });

  it('--target manifests prints the normalised documents, equal to the loaded desired state', async () => {
    const c = capture();
    expect(await synthCommand([QUICKSTART_DIR], { target: 'manifests', out: '' }, { output: 'text' }, c.io)).toBe(0);
    const docs = parseAllDocuments(c.out.join('\n')).map((d) => d.toJS());
    const loaded = await loadDesiredState([QUICKSTART_DIR]);
    if (!loaded.ok) throw new Error('quickstart must load');
    const s = loaded.state;
    expect(docs).toEqual([...s.sites, ...s.policies, ...s.networkMappings, ...s.protectedVms, ...s.recoveryPlans]);
  });

  it('exits 1 with diagnostics on invalid declarations, and on what Site Recovery cannot express', async () => {
    const dangling = capture();
    const invalidDir = join(QUICKSTART_DIR, '..', 'invalid', 'dangling-reference.yaml');
    expect(await synthCommand([invalidDir], { target: 'azure-site-recovery', out: await tmp.make() }, { output: 'text' }, dangling.io)).toBe(1);
    expect(dangling.err.join('\n')).toMatch(/dangling-reference\.yaml:\d+:\d+: error: policy "every-15m" is not declared/);

    const dir = await tmp.make();
    const file = join(dir, 'slow.yaml');
    await writeFile(file, [
      'apiVersion: drsite.dev/v1', 'kind: Site', 'metadata: {name: site-a}', 'spec: {type: host}', '---',
      'apiVersion: drsite.dev/v1', 'kind: Site', 'metadata: {name: site-b}', 'spec: {type: host, replicaServer: {enabled: true}}', '---',
      'apiVersion: drsite.dev/v1', 'kind: ReplicationPolicy', 'metadata: {name: slow}', 'spec: {frequency: 15m}', '---',
      'apiVersion: drsite.dev/v1', 'kind: ProtectedVM', 'metadata: {name: web-01}', 'spec: {vm: web-01, primary: site-a, replica: site-b, policy: slow}', '',
    ].join('\n'));
    const out = join(dir, 'out');
    const slow = capture();
    expect(await synthCommand([file], { target: 'azure-site-recovery', out }, { output: 'json' }, slow.io)).toBe(1);
    const report = JSON.parse(slow.out.join('')) as { ok: boolean; diagnostics: { severity: string; summary: string; line: number; path: string }[] };
    expect(report.ok).toBe(false);
    expect(report.diagnostics).toEqual([expect.objectContaining({ severity: 'error', line: 11, path: 'spec.frequency', summary: expect.stringContaining('every 15m') })]);
    expect(existsSync(out)).toBe(false);
  });
});

describe('examples/cdk/main.ts (the cdktf.json app)', () => {
  it('writes <outdir>/stacks/quickstart/cdk.tf.json as cdktf synth would', async () => {
    const outdir = await tmp.make();
    const main = join(import.meta.dirname, '..', '..', 'examples', 'cdk', 'main.ts');
    const child = spawn(process.execPath, [main], { cwd: outdir, env: { ...process.env, CDKTF_OUTDIR: outdir }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.stdout.resume();
    const [code] = await once(child, 'exit');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const tf = readTerraform(join(outdir, 'stacks', 'quickstart', 'cdk.tf.json'));
    expect(byName(tf, 'azurerm_recovery_services_vault', 'drsite-quickstart-vault').attrs).toMatchObject({ resource_group_name: 'drsite-quickstart', location: 'westeurope' });
    expect(Object.keys(tf.resource.azurerm_site_recovery_replication_recovery_plan)).toHaveLength(1);
  });
});

// What bin/drsite.mjs does at start: the entry point provides src/'s Terraform port.
provideTerraform(() => import('../../constructs/synth.ts'));

describe('the constructs module as src/ loads it', () => {
  it('has the interface src/model/terraform.ts declares (tsc checks the assignment), loaded at runtime once provided', async () => {
    const typed: ConstructsModule = constructsSynth;
    const loaded = await loadConstructs();
    expect(loaded.synthFailover).toBe(typed.synthFailover);
    expect(loaded.synthDesiredState).toBe(typed.synthDesiredState);
  });

  it('synthFailover turns a VM that does not replicate to Azure into diagnostics and writes nothing', async () => {
    const out = join(await tmp.make(), 'job-1');
    const r = await (await loadConstructs()).synthFailover({
      desired: yamlQuickstart(), vm: 'web-01', test: true, out, time: '2026-11-23T10:00:00Z',
      disks: [{ name: 'os', blobUrl: 'https://acct.blob.core.windows.net/c/rel-web-01/os.vhd', snapshotTime: '2026-11-23T10:00:00.0000000Z' }],
    });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.diagnostics.map((d) => d.summary)).toEqual(['ProtectedVM "web-01" does not replicate to an azure site']);
    expect(existsSync(out)).toBe(false);
  });
});

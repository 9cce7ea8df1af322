// The cdktf app of the quickstart (cdktf.json's "app"): `npx node examples/cdk/main.ts` writes
// cdktf.out/stacks/quickstart/cdk.tf.json, the Azure Site Recovery resources of the quickstart,
// which is what `cdktf synth` runs. Works offline: nothing is downloaded, terraform is not run.
import { App } from 'cdktf';
import { Construct } from 'constructs';
import { AsrStack, desiredStateOf } from '../../constructs/index.ts';
import { quickstart } from './quickstart.ts';

// cdktf synth passes its output directory in CDKTF_OUTDIR; App reads it, else 'cdktf.out'.
const app = new App();
const dr = new Construct(app, 'DrApp');
quickstart(dr);
// Validates the whole tree (references, frequencies, conflicts) before anything is synthesised.
const desired = desiredStateOf(dr);
new AsrStack(app, 'quickstart', {
  desired,
  // The quickstart's replica site is a host, so the vault's placement is named here.
  vault: { name: 'drsite-quickstart-vault', resourceGroup: 'drsite-quickstart', location: 'westeurope' },
});
app.synth();

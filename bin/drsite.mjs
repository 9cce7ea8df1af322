#!/usr/bin/env node
// Entry point of the `drsite` command. The sources are TypeScript run by Node's own type
// stripping, which needs the Node 24 that `npm ci` installs (the `node` dev dependency).
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  console.error(
    `drsite needs Node 24 (this is ${process.version}). Run it through npm (npm start, npx drsite), ` +
      'which uses the Node 24 that `npm ci` installed in node_modules.',
  );
  process.exit(1);
}
// The Terraform port's adapter: constructs/ is the only home of cdktf, and src/ never imports it.
const { provideTerraform } = await import('../src/model/terraform.ts');
provideTerraform(() => import('../constructs/synth.ts'));
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv);

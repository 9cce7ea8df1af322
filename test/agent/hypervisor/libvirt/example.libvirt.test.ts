// examples/libvirt loads cleanly: two libvirt sites, their network mappings onto libvirt
// networks, and a ProtectedVM naming an existing libvirt domain.
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { loadDesiredState } from '../../../../src/config/index.ts';

describe('examples/libvirt', () => {
  test('loads with no diagnostics, both sites on the libvirt hypervisor', async () => {
    const result = await loadDesiredState(['.'], { cwd: join(import.meta.dirname, '..', '..', '..', '..', 'examples', 'libvirt') });
    expect(result.diagnostics).toEqual([]);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const sites = Object.values(result.state.sites);
    expect(sites.map((s) => [s.metadata.name, s.spec.hypervisor, s.spec.libvirt?.uri])).toEqual([
      ['site-a', 'libvirt', 'qemu:///system'],
      ['site-b', 'libvirt', 'qemu:///system'],
    ]);
  });
});

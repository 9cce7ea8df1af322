// `drsite status`: replication per ProtectedVM as the last reconcile pass recorded it in the
// vault (a running `drsite run` refreshes it every pass). Reads only the vault.
import type { ObservedRelationship } from '../model/observed.ts';
import { formatBytes } from '../model/units.ts';
import { FAILOVER_CONDITION, healthMessage } from '../reconciler/record-status.ts';
import { Vault } from '../vault/vault.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, renderTable, type Io } from './output.ts';

export interface StatusRow {
  name: string;
  relationship: ObservedRelationship | null;
  conditions: readonly { type: string; status: string; reason: string; message: string }[];
  updatedAt: string;
  /** Declared failovers of recovery plans naming this VM that are refused or waiting. */
  declarations?: DeclarationProblem[];
}

export interface DeclarationProblem {
  recoveryPlan: string;
  /** False: refused or failed; Unknown: waiting. */
  status: string;
  reason: string;
  message: string;
}

/** Recovery plans whose declared failover the last pass found refused, failed or waiting. */
export function declarationProblems(vault: Vault): { problem: DeclarationProblem; vms: string[] }[] {
  const out: { problem: DeclarationProblem; vms: string[] }[] = [];
  for (const s of vault.listStatus('RecoveryPlan')) {
    const c = s.conditions.find((x) => x.type === FAILOVER_CONDITION);
    if (!c || c.status === 'True') continue;
    const spec = vault.getDesired('RecoveryPlan', s.name)?.spec as { groups?: { vms?: string[] }[] } | undefined;
    out.push({ problem: { recoveryPlan: s.name, status: c.status, reason: c.reason, message: c.message }, vms: (spec?.groups ?? []).flatMap((g) => g.vms ?? []) });
  }
  return out;
}

export function readStatus(vault: Vault): StatusRow[] {
  const declared = declarationProblems(vault);
  return vault.listStatus('ProtectedVM').map((s) => {
    const mine = declared.filter((d) => d.vms.includes(s.name)).map((d) => d.problem);
    return {
      name: s.name,
      relationship: (s.fields.relationship as ObservedRelationship | null | undefined) ?? null,
      conditions: s.conditions,
      updatedAt: s.updatedAt,
      ...(mine.length > 0 && { declarations: mine }),
    };
  });
}

const ago = (iso: string | undefined): string => {
  if (!iso) return '-';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
};

export function statusTable(rows: readonly StatusRow[]): string {
  return renderTable(
    ['VM', 'Primary -> Replica', 'Roles', 'State', 'Health', 'Last replication', 'Lag', 'Pending'],
    rows.map(({ name, relationship: r }) => {
      if (!r) return [name, '-', '-', 'NotProtected', '-', '-', '-', '-'];
      const progress = r.initialReplication && r.initialReplication.bytesTotal > 0
        ? ` ${Math.floor((100 * r.initialReplication.bytesDone) / r.initialReplication.bytesTotal)}%`
        : '';
      return [
        name,
        `${r.direction.primary} -> ${r.direction.replica}`,
        Object.entries(r.roles).map(([site, role]) => `${site}=${role}`).join(' '),
        `${r.state}${progress}${r.testFailover === 'active' ? ` +test(${r.testVms.join(',')})` : ''}`,
        r.health,
        ago(r.lastReplicationTime),
        r.lagSeconds === undefined ? '-' : `${r.lagSeconds}s`,
        formatBytes(r.pendingBytes),
      ];
    }),
  );
}

/** One line per ProtectedVM whose health is not Normal or that waits to retry a failure: what and why. */
export function problems(rows: readonly StatusRow[]): string[] {
  const out: string[] = [];
  for (const { name, relationship: r } of rows) {
    // lastError outlives the failure (it stays for the record): only a pending retry makes it news.
    if (!r || (r.health === 'Normal' && !r.nextRetryAt)) continue;
    const retry = r.nextRetryAt ? ` (next retry ${r.nextRetryAt.replace(/\.\d+Z$/, 'Z')})` : '';
    out.push(`${name}: ${r.health} - ${healthMessage(r)}${retry}`);
  }
  return out.length ? ['', ...out, '', 'drsite events <vm> lists what happened.'] : [];
}

export async function statusCommand(g: GlobalOptions, io: Io): Promise<number> {
  const vault = Vault.open(g.vault);
  try {
    const rows = readStatus(vault);
    const declared = declarationProblems(vault);
    if (g.output === 'json') printJson(io, rows);
    else {
      io.out(rows.length ? [statusTable(rows), ...problems(rows)].join('\n') : 'No ProtectedVM status recorded yet (run drsite apply or drsite run).');
      for (const { problem: p } of declared) {
        const what = p.status === 'False' ? (p.reason === 'Failed' ? 'failed' : 'refused') : 'waiting';
        io.out(`RecoveryPlan ${p.recoveryPlan}: declared failover ${what}:\n${p.message.split('\n').map((l) => `  ${l}`).join('\n')}`);
      }
    }
    return 0;
  } finally {
    vault.close();
  }
}

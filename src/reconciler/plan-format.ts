// Prints a plan the way Terraform does (one line per action with its symbol, target and reason,
// details indented, a summary line) and as JSON for CI. Colours only when asked.
import { unmetDeclarations, type ActionType, type FailoverOrigin, type Plan, type PlannedAction, type PolicyFieldChange } from './plan-types.ts';

export type PlanSymbol = '+' | '~' | '-' | '!';

/**
 * `+` creates (protection, test VMs), `~` changes in place, `-` removes, `!` is the failover family
 * that moves production. A destructive action outside `!` keeps its symbol and is marked
 * "(destructive)" on its line.
 */
export const ACTION_SYMBOLS: Readonly<Record<ActionType, PlanSymbol>> = {
  'enable-protection': '+',
  'start-initial-replication': '+',
  'extend-replication': '+',
  'test-failover': '+',
  'change-policy': '~',
  'change-disk-set': '~',
  'move-replica-storage': '~',
  resume: '~',
  resync: '~',
  'disable-protection': '-',
  'remove-extended-replication': '-',
  'cleanup-test-failover': '-',
  'planned-failover': '!',
  'unplanned-failover': '!',
  'commit-failover': '!',
  'cancel-failover': '!',
  'reverse-replication': '!',
  failback: '!',
};

export interface PlanSummary {
  add: number;
  change: number;
  remove: number;
  /** Every action flagged destructive, whatever its symbol (so a removal counts here and in remove). */
  destructive: number;
}

export interface FormatOptions {
  /** ANSI colours; default false. */
  color?: boolean;
}

export function planSummary(plan: Plan): PlanSummary {
  const s: PlanSummary = { add: 0, change: 0, remove: 0, destructive: 0 };
  for (const a of plan.actions) {
    const sym = ACTION_SYMBOLS[a.type];
    if (sym === '+') s.add++;
    else if (sym === '~') s.change++;
    else if (sym === '-') s.remove++;
    if (a.destructive) s.destructive++;
  }
  return s;
}

const COLORS: Record<PlanSymbol | 'warn', string> = { '+': '32', '~': '33', '-': '31', '!': '1;35', warn: '33' };

export function formatPlan(plan: Plan, options: FormatOptions = {}): string {
  const paint = (key: PlanSymbol | 'warn', text: string): string => (options.color ? `\x1b[${COLORS[key]}m${text}\x1b[0m` : text);
  const out: string[] = [];
  for (const a of plan.actions) {
    const sym = ACTION_SYMBOLS[a.type];
    const mark = a.destructive && sym !== '!' ? ' (destructive)' : '';
    out.push(`${paint(sym, `  ${sym} ${a.type}`)} ${a.target.kind}/${a.target.name}${mark}: ${a.reason}`);
    for (const line of detailLines(a)) out.push(`        ${line}`);
  }
  if (plan.warnings.length > 0) {
    if (out.length > 0) out.push('');
    for (const w of plan.warnings) out.push(`${paint('warn', `Warning [${w.code}]`)} ${w.target.kind}/${w.target.name}: ${w.message}`);
  }
  if (out.length > 0) out.push('');
  const unmet = unmetDeclarations(plan);
  const waiting = plan.warnings.filter((w) => w.code === 'failover-waiting').length;
  if (plan.actions.length === 0 && unmet.length > 0) {
    out.push(`Refused: ${unmet.length} declared action${unmet.length === 1 ? '' : 's'} cannot run (see the warnings above); nothing was planned. The declarations are not met.`);
  } else if (plan.actions.length === 0 && waiting > 0) {
    out.push(`No changes now: ${waiting === 1 ? 'a declared action waits' : `${waiting} declared actions wait`} (see the warnings above). The declarations are not met yet.`);
  } else if (plan.actions.length === 0) {
    out.push('No changes. The observed state matches the declarations.');
  } else {
    const s = planSummary(plan);
    out.push(`Plan: ${s.add} to add, ${s.change} to change, ${s.remove} to remove, ${s.destructive} destructive.`);
    if (unmet.length > 0) out.push(`Refused: ${unmet.length} declared action${unmet.length === 1 ? '' : 's'} cannot run (see the warnings above).`);
  }
  return `${out.join('\n')}\n`;
}

const ORIGIN_KEYS: ReadonlySet<string> = new Set(['recoveryPlan', 'failoverId', 'groupIndex', 'groupName'] satisfies (keyof FailoverOrigin)[]);

function detailLines(a: PlannedAction): string[] {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(a.details as Record<string, unknown>)) {
    // The reason line already names the recovery plan, request and group; empty lists say nothing.
    if (value === undefined || ORIGIN_KEYS.has(key) || (Array.isArray(value) && value.length === 0)) continue;
    if (a.type === 'change-policy' && key === 'changes') {
      for (const c of value as PolicyFieldChange[]) lines.push(`~ ${c.field}: ${c.from ?? '(unset)'} -> ${c.to ?? '(unset)'}`);
    } else {
      lines.push(`${key}: ${show(value)}`);
    }
  }
  return lines;
}

function show(v: unknown): string {
  if (v === null) return 'none';
  if (Array.isArray(v)) return v.map(show).join(', ');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Machine-readable plan (`drsite plan --json`): versioned, with the summary counts. */
export function planToJson(plan: Plan): string {
  const refused = unmetDeclarations(plan);
  return `${JSON.stringify({ formatVersion: 1, summary: planSummary(plan), actions: plan.actions, warnings: plan.warnings, refused }, null, 2)}\n`;
}

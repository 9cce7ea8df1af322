// The config layer's public API: load YAML declarations into a validated, defaulted DesiredState,
// or validate a single document without files (for the constructs front end).
export { loadDesiredState, loadDesiredStateFromSources, type LoadOptions, type LoadResult } from './load.ts';
export type { SourceText } from './files.ts';
export { validateDocument, schemaIssues, knownKinds, type SchemaIssue } from './schema.ts';
export { applyDefaults, ALL_FAILOVER_TYPES, DEFAULT_REPLICA_PORT, DEFAULT_SCRIPT_TIMEOUT } from './defaults.ts';
export { checkRules, RULES, ENV_VAR_NAME, type Declared, type Rule, type RuleInput } from './rules.ts';
export { formatPath, type Segment } from './field-path.ts';

// The agent's own configuration file (`drsite agent --config <file>`): who this host is, where it
// listens, its certificates and, when it is a Replica server, which primaries it accepts.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { TerminalError } from '../model/errors.ts';
import { DEFAULT_REPLICA_PORT } from '../model/site.ts';
import type { AllowedPrimary, LibvirtSiteSettings, QemuSiteSettings } from '../model/types.generated.ts';
import { parseDuration } from '../model/units.ts';
import type { LibvirtSettings, QemuSettings } from './hypervisor/index.ts';

export interface AgentConfig {
  /** This host's name: the CN of its certificate, matched by peers' allowedPrimaries. */
  name: string;
  /** VMs under `<dataDir>/vms`, NBD sockets under `<dataDir>/nbd`, relationship state, outboxes. */
  dataDir: string;
  listen: { host: string; port: number };
  /** Folder with `ca.crt`, `<name>.crt`, `<name>.key` (see `drsite certs`). */
  tlsDir: string;
  /** Client certificate names (globs) allowed to manage this agent (the reconciler, the CLI). */
  operators: string[];
  replicaServer: {
    enabled: boolean;
    defaultStoragePath: string;
    allowedPrimaries: AllowedPrimary[];
  };
  /** How VMs are kept and run: `files` (folders, nothing boots), `qemu` (real guests) or `libvirt` (libvirt domains). @default files */
  hypervisor: 'files' | 'qemu' | 'libvirt';
  /** Settings of the qemu driver (the Site's `qemu` block). */
  qemu: QemuSettings;
  /** Settings of the libvirt driver (the Site's `libvirt` block). */
  libvirt?: LibvirtSettings;
  /** The replica links' no-progress timeout: a stalled transfer gives up after it. @default 60 s */
  linkTimeoutMs?: number;
}

/** The libvirt driver's settings from the Site's `libvirt` block (the same block in an agent's configuration file). */
export function libvirtSettingsOf(block: LibvirtSiteSettings | undefined): LibvirtSettings {
  if (!block) return {};
  const { shutdownTimeout, bootTimeout, ...rest } = block;
  return {
    ...rest,
    ...(shutdownTimeout !== undefined && { shutdownTimeoutMs: parseDuration(shutdownTimeout) }),
    ...(bootTimeout !== undefined && { bootTimeoutMs: parseDuration(bootTimeout) }),
  };
}

/** The qemu driver's settings from the Site's `qemu` block (the same block in an agent's configuration file). */
export function qemuSettingsOf(block: QemuSiteSettings | undefined): QemuSettings {
  if (!block) return {};
  const { shutdownTimeout, bootTimeout, networks, ...rest } = block;
  const ms = shutdownTimeout === undefined ? undefined : parseDuration(shutdownTimeout);
  const boot = bootTimeout === undefined ? undefined : parseDuration(bootTimeout);
  const nets = networks && Object.fromEntries(Object.entries(networks).filter((e): e is [string, string] => e[1] !== undefined));
  return { ...rest, ...(nets && { networks: nets }), ...(ms !== undefined && { shutdownTimeoutMs: ms }), ...(boot !== undefined && { bootTimeoutMs: boot }) };
}

const SCHEMA_DIR = join(import.meta.dirname, '..', '..', 'schemas');
const QEMU_BLOCK = 'https://drsite.dev/schemas/site.schema.json#/properties/spec/properties/qemu';
const LIBVIRT_BLOCK = 'https://drsite.dev/schemas/site.schema.json#/properties/spec/properties/libvirt';

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'dataDir'],
  properties: {
    name: { type: 'string', pattern: '^[A-Za-z0-9][-A-Za-z0-9.]{0,252}$' },
    dataDir: { type: 'string', minLength: 1 },
    listen: {
      type: 'object',
      additionalProperties: false,
      properties: { host: { type: 'string', minLength: 1 }, port: { type: 'integer', minimum: 0, maximum: 65535 } },
    },
    tlsDir: { type: 'string', minLength: 1 },
    linkTimeout: { type: 'string', pattern: '^[0-9]+(ms|s|m|h)$' },
    hypervisor: { enum: ['files', 'qemu', 'libvirt'] },
    // The Site's own `qemu` and `libvirt` blocks, so the two places say it the same way.
    qemu: { $ref: QEMU_BLOCK },
    libvirt: { $ref: LIBVIRT_BLOCK },
    operators: { type: 'array', items: { type: 'string', minLength: 1 } },
    replicaServer: {
      type: 'object',
      additionalProperties: false,
      required: ['enabled'],
      properties: {
        enabled: { type: 'boolean' },
        defaultStoragePath: { type: 'string', minLength: 1 },
        allowedPrimaries: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['server'],
            properties: {
              server: { type: 'string', minLength: 1 },
              storagePath: { type: 'string', minLength: 1 },
              trustGroup: { type: 'string', minLength: 1 },
            },
          },
        },
      },
    },
  },
} as const;

let validate: ReturnType<Ajv2020['compile']> | undefined;

/** Parses and checks an agent configuration; relative paths are taken from the file's folder. */
export function parseAgentConfig(text: string, file: string): AgentConfig {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    throw new TerminalError('invalid-argument', `${file}: not valid YAML: ${(e as Error).message}`);
  }
  if (!validate) {
    const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true });
    for (const f of ['common.schema.json', 'site.schema.json']) ajv.addSchema(JSON.parse(readFileSync(join(SCHEMA_DIR, f), 'utf8')) as object);
    validate = ajv.compile(schema);
  }
  if (!validate(doc)) {
    const problems = (validate.errors ?? []).map((e) => `${e.instancePath || '(top)'} ${e.message}`).join('; ');
    throw new TerminalError('invalid-argument', `${file}: invalid agent configuration: ${problems}`);
  }
  const c = doc as Partial<Omit<AgentConfig, 'qemu' | 'libvirt'>> & { name: string; dataDir: string; qemu?: QemuSiteSettings; libvirt?: LibvirtSiteSettings; linkTimeout?: string };
  const base = dirname(resolve(file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const dataDir = abs(c.dataDir);
  return {
    name: c.name,
    dataDir,
    listen: { host: c.listen?.host ?? '127.0.0.1', port: c.listen?.port ?? DEFAULT_REPLICA_PORT },
    tlsDir: abs(c.tlsDir ?? 'certs'),
    operators: c.operators ?? ['drsite-operator'],
    replicaServer: {
      enabled: c.replicaServer?.enabled ?? false,
      defaultStoragePath: abs(c.replicaServer?.defaultStoragePath ?? resolve(dataDir, 'replicas')),
      allowedPrimaries: (c.replicaServer?.allowedPrimaries ?? []).map((p) => ({
        ...p,
        ...(p.storagePath && { storagePath: abs(p.storagePath) }),
      })),
    },
    hypervisor: c.hypervisor ?? 'files',
    ...(c.linkTimeout !== undefined && { linkTimeoutMs: parseDuration(c.linkTimeout) }),
    qemu: qemuSettingsOf(c.qemu),
    ...(c.libvirt && { libvirt: libvirtSettingsOf(c.libvirt) }),
  };
}

export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new TerminalError('not-found', `cannot read agent configuration ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  return parseAgentConfig(text, file);
}

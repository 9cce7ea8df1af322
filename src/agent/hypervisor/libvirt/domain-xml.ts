// Libvirt domain XML: read what drsite needs of a domain (its disks and how they are stored, its
// network interfaces and MACs), and rewrite a replicated domain's definition for the recovery site
// (its disks on the agent's NBD exports of the recovery point, its interfaces on that site's
// libvirt networks, the NoCloud seed disk added). Parsed with fast-xml-parser in order-preserving
// mode, so a rewrite keeps every element drsite does not touch as the source domain had it.
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { TerminalError } from '../../../model/errors.ts';

/** One element: its tag, attributes and children in document order (text as `#text` nodes). */
export interface XmlNode {
  tag: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text?: string;
}

const OPTS = { preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: '', commentPropName: '#comment', parseTagValue: false, parseAttributeValue: false, trimValues: true } as const;

type Raw = Record<string, unknown>;

function fromRaw(r: Raw): XmlNode | undefined {
  const tag = Object.keys(r).find((k) => k !== ':@');
  if (!tag || tag === '#comment') return undefined;
  if (tag === '#text') return { tag, attrs: {}, children: [], text: String(r[tag]) };
  const attrs = Object.fromEntries(Object.entries((r[':@'] as Record<string, unknown> | undefined) ?? {}).map(([k, v]) => [k, String(v)]));
  const children = ((r[tag] as Raw[]) ?? []).map(fromRaw).filter((n): n is XmlNode => n !== undefined);
  return { tag, attrs, children };
}

function toRaw(n: XmlNode): Raw {
  if (n.tag === '#text') return { '#text': n.text ?? '' };
  return { [n.tag]: n.children.map(toRaw), ...(Object.keys(n.attrs).length && { ':@': n.attrs }) };
}

export function parseXml(xml: string, what: string): XmlNode {
  let raw: Raw[];
  try {
    raw = new XMLParser(OPTS).parse(xml) as Raw[];
  } catch (e) {
    throw new TerminalError('invalid-argument', `${what}: not valid XML: ${(e as Error).message}`);
  }
  const root = raw.map(fromRaw).find((n) => n && n.tag !== '#text' && n.tag !== '?xml');
  if (!root) throw new TerminalError('invalid-argument', `${what}: empty XML document`);
  return root;
}

export function buildXml(n: XmlNode): string {
  return String(new XMLBuilder({ ...OPTS, format: true, suppressEmptyNode: true }).build([toRaw(n)]));
}

export const child = (n: XmlNode | undefined, tag: string): XmlNode | undefined => n?.children.find((c) => c.tag === tag);
export const children = (n: XmlNode | undefined, tag: string): XmlNode[] => n?.children.filter((c) => c.tag === tag) ?? [];
export const textOf = (n: XmlNode | undefined): string | undefined => n?.children.find((c) => c.tag === '#text')?.text;
export const el = (tag: string, attrs: Record<string, string> = {}, kids: XmlNode[] = []): XmlNode => ({ tag, attrs, children: kids });
const textEl = (tag: string, text: string): XmlNode => ({ tag, attrs: {}, children: [{ tag: '#text', attrs: {}, children: [], text }] });

export interface DomainDisk {
  /** `vda`: the disk's target device, also its replicated disk id. */
  readonly target: string;
  readonly bus: string | undefined;
  /** libvirt's disk type: file, block, network, volume, dir, nvme, vhostuser. */
  readonly type: string;
  /** The image format libvirt opens it with (`<driver type>`): raw, qcow2, ... */
  readonly format: string;
  /** file or block device path (file, block disks). */
  readonly path: string | undefined;
  /** Network disks: the protocol (nbd, rbd, iscsi, ...). */
  readonly protocol: string | undefined;
  /** Volume disks: pool and volume. */
  readonly volume: { pool: string; volume: string } | undefined;
  readonly readonly: boolean;
  /** Has a backing chain (`<backingStore>` with a source): an overlay libvirt manages. */
  readonly backing: boolean;
}

export interface DomainInterface {
  /** drsite's adapter name for it: `eth<n>` in document order. */
  readonly name: string;
  readonly type: string;
  readonly network: string | undefined;
  readonly bridge: string | undefined;
  readonly mac: string | undefined;
}

export interface DomainInfo {
  readonly name: string;
  readonly uuid: string | undefined;
  readonly type: string;
  /** Disks proper (device='disk'); cdroms and floppies are not replicated. */
  readonly disks: readonly DomainDisk[];
  readonly interfaces: readonly DomainInterface[];
}

export function readDomain(xml: string, what = 'domain XML'): DomainInfo {
  const root = parseXml(xml, what);
  if (root.tag !== 'domain') throw new TerminalError('invalid-argument', `${what}: root element is <${root.tag}>, not <domain>`);
  const devices = child(root, 'devices');
  const disks = children(devices, 'disk')
    .filter((d) => (d.attrs.device ?? 'disk') === 'disk')
    .map((d): DomainDisk => {
      const source = child(d, 'source');
      const target = child(d, 'target');
      const backing = child(d, 'backingStore');
      return {
        target: target?.attrs.dev ?? '',
        bus: target?.attrs.bus,
        type: d.attrs.type ?? 'file',
        format: child(d, 'driver')?.attrs.type ?? 'raw',
        path: source?.attrs.file ?? source?.attrs.dev,
        protocol: source?.attrs.protocol,
        volume: source?.attrs.pool && source.attrs.volume ? { pool: source.attrs.pool, volume: source.attrs.volume } : undefined,
        readonly: child(d, 'readonly') !== undefined,
        backing: backing !== undefined && child(backing, 'source') !== undefined,
      };
    });
  const interfaces = children(devices, 'interface').map((i, n): DomainInterface => {
    const source = child(i, 'source');
    return { name: `eth${n}`, type: i.attrs.type ?? 'network', network: source?.attrs.network, bridge: source?.attrs.bridge, mac: child(i, 'mac')?.attrs.address?.toLowerCase() };
  });
  return { name: textOf(child(root, 'name')) ?? '', uuid: textOf(child(root, 'uuid')), type: root.attrs.type ?? 'kvm', disks, interfaces };
}

/** Why a disk's writes cannot be tracked, or undefined when they can (qcow2 or raw local images). */
export function untrackableReason(d: DomainDisk): string | undefined {
  if (d.type === 'network') return `it is a network disk (protocol ${d.protocol ?? 'unknown'}): its data lives on a remote server, which libvirt's checkpoints and backup jobs cannot track here; protect it on its storage system, or exclude it`;
  if (d.type !== 'file' && d.type !== 'block' && d.type !== 'volume') return `libvirt disk type "${d.type}" has no image drsite can track`;
  if (d.format !== 'qcow2' && d.format !== 'raw') {
    return `its format is ${d.format}: drsite tracks qcow2 images (libvirt checkpoints) and raw ones (QEMU dirty bitmaps); convert it with \`qemu-img convert -O qcow2\` while the domain is off and point the domain at the copy`;
  }
  if (d.backing) return 'it has a backing chain (an external snapshot overlay): commit it (`virsh blockcommit --active --pivot`) before protecting the domain';
  return undefined;
}

export interface TargetDisk {
  readonly target: string;
  /** The agent's NBD export of the disk (unix socket, export name). */
  readonly socket: string;
  readonly exportName: string;
}

export interface RewriteOptions {
  readonly name: string;
  readonly disks: readonly TargetDisk[];
  /** Adapter name (`eth0`, ...) → libvirt network on this site; an interface without one is removed (no network at all). */
  readonly networks: Readonly<Record<string, string | undefined>>;
  /** The cloud-init NoCloud seed disk (read-only, serial `cidata`). */
  readonly seedImage?: string;
  /** Where the guest's file-backed serial console goes on this site. */
  readonly serialLog?: string;
  /** The uuid of the domain when it is defined already on this site (a redefinition keeps it). */
  readonly uuid?: string;
}

/**
 * The source domain's definition for a failover domain on this site: its name, not the source's
 * uuid (libvirt gives it a new one; a redefinition keeps the one it has here), its disks on the agent's exports, its interfaces on the mapped networks
 * with their MACs kept, the seed disk, and no paths that belonged to the source host's runtime.
 */
export function rewriteForTarget(sourceXml: string, opts: RewriteOptions): string {
  const root = parseXml(sourceXml, `replicated definition of ${opts.name}`);
  if (root.tag !== 'domain') throw new TerminalError('invalid-argument', `replicated definition of ${opts.name}: not a <domain>`);
  delete root.attrs.id;
  root.children = root.children.filter((c) => c.tag !== 'uuid' && c.tag !== 'seclabel');
  const name = child(root, 'name');
  if (name) name.children = [{ tag: '#text', attrs: {}, children: [], text: opts.name }];
  else root.children.unshift(textEl('name', opts.name));
  if (opts.uuid) root.children.splice(root.children.findIndex((c) => c.tag === 'name') + 1, 0, textEl('uuid', opts.uuid));
  const devices = child(root, 'devices');
  if (!devices) throw new TerminalError('invalid-argument', `replicated definition of ${opts.name}: no <devices>`);
  const byTarget = new Map(opts.disks.map((d) => [d.target, d]));
  const used = new Set<string>();
  let nic = 0;
  const kept: XmlNode[] = [];
  for (const d of devices.children) {
    if (d.tag === 'disk') {
      const target = child(d, 'target');
      if (target?.attrs.dev) used.add(target.attrs.dev);
      if ((d.attrs.device ?? 'disk') !== 'disk') {
        // A cdrom or floppy of the source host: an empty drive here.
        d.children = d.children.filter((c) => c.tag !== 'source' && c.tag !== 'backingStore');
        d.attrs.type = 'file';
        kept.push(d);
        continue;
      }
      const t = target?.attrs.dev ? byTarget.get(target.attrs.dev) : undefined;
      if (!t) continue; // an excluded disk is not on the replica
      const driver = child(d, 'driver');
      d.attrs = { type: 'network', device: 'disk' };
      d.children = [
        el('driver', { name: driver?.attrs.name ?? 'qemu', type: 'raw', cache: 'none' }),
        el('source', { protocol: 'nbd', name: t.exportName }, [el('host', { transport: 'unix', socket: t.socket })]),
        ...d.children.filter((c) => ['target', 'boot', 'address', 'serial', 'alias'].includes(c.tag) && c.tag !== 'alias'),
      ];
      kept.push(d);
    } else if (d.tag === 'interface') {
      const adapter = `eth${nic++}`;
      const network = opts.networks[adapter];
      if (!network) continue;
      d.attrs = { type: 'network' };
      d.children = [el('source', { network }), ...d.children.filter((c) => ['mac', 'model', 'boot', 'address', 'mtu', 'driver'].includes(c.tag))];
      kept.push(d);
    } else if (d.tag === 'serial' || d.tag === 'console') {
      if (d.attrs.type === 'file' && opts.serialLog) {
        d.children = d.children.map((c) => (c.tag === 'source' ? el('source', { path: opts.serialLog! }) : c));
      } else if (d.attrs.type === 'file') {
        d.attrs.type = 'pty';
        d.children = d.children.filter((c) => c.tag !== 'source');
      }
      kept.push(d);
    } else if (d.tag === 'channel') {
      // Unix channels (the guest agent's) get a socket path libvirt chooses on this host.
      if (d.attrs.type === 'unix') d.children = d.children.filter((c) => c.tag !== 'source');
      kept.push(d);
    } else if (d.tag === 'hostdev' || d.tag === 'filesystem' || d.tag === 'emulator') {
      // Host devices and shared folders belong to the source host; the emulator is this host's default.
      continue;
    } else {
      kept.push(d);
    }
  }
  if (opts.seedImage) {
    const dev = freeTarget(used);
    kept.push(el('disk', { type: 'file', device: 'disk' }, [
      el('driver', { name: 'qemu', type: 'raw' }),
      el('source', { file: opts.seedImage }),
      el('target', { dev, bus: 'virtio' }),
      el('readonly'),
      textEl('serial', 'cidata'),
    ]));
  }
  devices.children = kept;
  return buildXml(root);
}

function freeTarget(used: Set<string>): string {
  for (let i = 25; i >= 0; i--) {
    const dev = `vd${String.fromCharCode(97 + i)}`;
    if (!used.has(dev)) return dev;
  }
  throw new TerminalError('invalid-argument', 'no free virtio disk name for the seed disk');
}

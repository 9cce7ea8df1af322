// An in-process Kubernetes API server for the controller's tests. It STANDS IN FOR A REAL API
// SERVER: no kube-apiserver (nor etcd) can be installed on these machines. It speaks real HTTP
// and JSON on loopback and implements what the controller relies on, with the API server's
// semantics: namespaced custom resources of the registered CRDs (create / get / list / update /
// merge-patch / delete), a global resourceVersion with 409 Conflict on a stale one, 409
// AlreadyExists, metadata.generation moved by spec changes only, the status subresource (the
// main endpoint ignores status, /status ignores everything else), structural pruning of fields
// the CRD schema does not declare (reported as a Warning header, as the real server does),
// finalizers and deletionTimestamp, watch with history replay, bookmarks, timeoutSeconds and
// 410 Gone (an ERROR event) for a compacted resourceVersion; plus core/v1 Events and
// coordination.k8s.io/v1 Leases. Anything it does not implement answers 404 or 415, never a
// silent success. It serves HTTPS with its own CA, which the kubeconfig it writes trusts, and
// wants the bearer token that kubeconfig carries.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { CustomResourceDefinition, StructuralSchema } from '../../src/k8s/crds.ts';
import { createCa, issueCertificate } from '../../src/transport/certs.ts';

type Obj = { apiVersion?: string; kind?: string; metadata: Record<string, unknown> & { name: string; namespace: string }; [k: string]: unknown };

interface Collection {
  apiVersion: string;
  kind: string;
  /** CRDs: status subresource, generation, pruning. */
  schema?: StructuralSchema;
}

interface HistoryEntry {
  rv: number;
  collection: string;
  namespace: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}

interface Watcher {
  collection: string;
  namespace: string;
  res: ServerResponse;
  bookmarks: boolean;
}

class HttpError extends Error {
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string, message: string) {
    super(message);
    this.code = code;
    this.reason = reason;
  }
}

const clone = <T>(v: T): T => structuredClone(v);

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Drops what a structural schema does not declare; returns the paths dropped. */
function prune(value: unknown, schema: StructuralSchema | undefined, path: string, dropped: string[]): void {
  if (!schema || schema['x-kubernetes-preserve-unknown-fields']) return;
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) prune(v, schema.items, `${path}[${i}]`, dropped);
    return;
  }
  if (typeof value !== 'object' || value === null) return;
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    const sub = schema.properties?.[k] ?? schema.additionalProperties;
    if (!sub) {
      dropped.push(`${path}.${k}`);
      delete o[k];
    } else prune(o[k], sub, `${path}.${k}`, dropped);
  }
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export class FakeApiServer {
  private readonly server: Server;
  private readonly collections = new Map<string, Collection>();
  /** `${collection}/${namespace}/${name}` → object. */
  private readonly objects = new Map<string, Obj>();
  private readonly history: HistoryEntry[] = [];
  private readonly watchers = new Set<Watcher>();
  private rv = 100;
  /** Watches from a resourceVersion below this get 410 Gone. */
  private compactedBelow = 0;
  private heldWatches: (() => void)[] | undefined;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  /** Every request as `METHOD path` (query left out), in order. */
  readonly requests: string[] = [];
  /** Fields pruned because the CRD schema does not declare them (the real server warns so). */
  readonly pruned: string[] = [];
  /** Every change as `ADDED|MODIFIED|DELETED <plural>/<name>`, in resourceVersion order. */
  readonly changes: string[] = [];
  /** How many 410 Gone the watch endpoint has answered. */
  goneServed = 0;
  url = '';

  private readonly caPem: string;

  constructor() {
    const ca = createCa({ commonName: 'fake-kubernetes-ca' });
    const tls = issueCertificate(ca, { commonName: 'kube-apiserver', altNames: ['127.0.0.1', 'localhost'], usage: 'server' });
    this.caPem = ca.certPem;
    this.server = createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => void this.handle(req, res));
    this.collections.set('api/v1/events', { apiVersion: 'v1', kind: 'Event' });
    this.collections.set('apis/coordination.k8s.io/v1/leases', { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease' });
  }

  /** Serves the kinds these CRDs define, as applying them to a cluster would. */
  installCrds(crds: readonly CustomResourceDefinition[]): void {
    for (const c of crds) {
      const v = c.spec.versions[0]!;
      this.collections.set(`apis/${c.spec.group}/${v.name}/${c.spec.names.plural}`, { apiVersion: `${c.spec.group}/${v.name}`, kind: c.spec.names.kind, schema: v.schema.openAPIV3Schema });
    }
  }

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    this.bookmarkTimer = setInterval(() => this.sendBookmarks(), 1000);
    this.bookmarkTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    for (const w of this.watchers) w.res.end();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** A kubeconfig (YAML) pointing @kubernetes/client-node at this server. */
  kubeconfig(namespace = 'default'): string {
    return [
      'apiVersion: v1', 'kind: Config', 'current-context: fake',
      'clusters:', `- name: fake`, `  cluster: {server: "${this.url}", certificate-authority-data: ${Buffer.from(this.caPem).toString('base64')}}`,
      'users:', '- name: tester', '  user: {token: test-token}',
      'contexts:', '- name: fake', `  context: {cluster: fake, user: tester, namespace: ${namespace}}`, '',
    ].join('\n');
  }

  // Test controls: what etcd compaction and a restarting API server do to watchers.

  /** Ends every open watch (clients see the connection close). */
  closeWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** New watch requests wait until released (the API server is "down" for watches). */
  holdWatches(): () => void {
    this.heldWatches = [];
    return () => {
      const held = this.heldWatches ?? [];
      this.heldWatches = undefined;
      for (const go of held) go();
    };
  }

  /** Forgets history: a watch from any resourceVersion before now gets 410 Gone. */
  compact(): void {
    this.compactedBelow = this.rv + 1;
    this.history.length = 0;
  }

  /** Direct read for assertions (a copy). */
  get(collection: string, namespace: string, name: string): Obj | undefined {
    const o = this.objects.get(`${collection}/${namespace}/${name}`);
    return o && clone(o);
  }

  list(collection: string, namespace: string): Obj[] {
    return [...this.objects.entries()].filter(([k]) => k.startsWith(`${collection}/${namespace}/`)).map(([, o]) => clone(o));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push(`${req.method} ${url.pathname}`);
    try {
      if (req.headers.authorization !== 'Bearer test-token') throw new HttpError(401, 'Unauthorized', 'Unauthorized');
      const body = await readBody(req);
      const route = this.route(url.pathname);
      if (req.method === 'GET' && !route.name && url.searchParams.get('watch') === 'true') return this.watch(route, url.searchParams, res);
      const result = this.dispatch(req.method ?? 'GET', route, req.headers['content-type'] ?? '', body);
      if (result.warnings.length) res.setHeader('Warning', result.warnings.map((w) => `299 - "${w}"`).join(', '));
      send(res, result.code, result.body);
    } catch (e) {
      const err = e instanceof HttpError ? e : new HttpError(500, 'InternalError', (e as Error).message);
      send(res, err.code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: err.message, reason: err.reason, code: err.code });
    }
  }

  private route(path: string): { collection: string; namespace: string; name?: string; status: boolean } {
    const m = /^\/(api\/v1|apis\/[^/]+\/[^/]+)\/namespaces\/([^/]+)\/([^/]+)(?:\/([^/]+))?(\/status)?$/.exec(path);
    const collection = m && `${m[1]}/${m[3]}`;
    if (!m || !collection || !this.collections.has(collection)) throw new HttpError(404, 'NotFound', `the server could not find the requested resource (${path})`);
    return { collection, namespace: decodeURIComponent(m[2]!), ...(m[4] && { name: decodeURIComponent(m[4]) }), status: m[5] !== undefined };
  }

  private dispatch(method: string, r: ReturnType<FakeApiServer['route']>, contentType: string, body: unknown): { code: number; body: unknown; warnings: string[] } {
    const col = this.collections.get(r.collection)!;
    const key = `${r.collection}/${r.namespace}/${r.name}`;
    const warnings: string[] = [];
    if (r.status && !col.schema) throw new HttpError(404, 'NotFound', 'no status subresource');
    if (!r.name) {
      if (method === 'GET') return { code: 200, body: { apiVersion: col.apiVersion, kind: `${col.kind}List`, metadata: { resourceVersion: String(this.rv) }, items: this.list(r.collection, r.namespace) }, warnings };
      if (method !== 'POST') throw new HttpError(405, 'MethodNotAllowed', `${method} not allowed on a collection`);
      const o = body as Obj;
      const name = o?.metadata?.name;
      if (typeof name !== 'string' || !name) throw new HttpError(422, 'Invalid', 'metadata.name: Required value');
      const k = `${r.collection}/${r.namespace}/${name}`;
      if (this.objects.has(k)) throw new HttpError(409, 'AlreadyExists', `${col.kind.toLowerCase()} "${name}" already exists`);
      const created: Obj = { ...clone(o), apiVersion: col.apiVersion, kind: col.kind, metadata: { ...clone(o.metadata), namespace: r.namespace, uid: randomUUID(), creationTimestamp: new Date().toISOString() } };
      delete created.metadata.resourceVersion;
      delete created.metadata.deletionTimestamp;
      if (col.schema) {
        delete created.status; // the main endpoint of a resource with a status subresource ignores status
        created.metadata.generation = 1;
        this.prune(created, col, warnings);
      }
      return { code: 201, body: this.write(r, k, created, 'ADDED'), warnings };
    }
    const cur = this.objects.get(key);
    if (!cur) throw new HttpError(404, 'NotFound', `${col.kind.toLowerCase()} "${r.name}" not found`);
    if (method === 'GET') return { code: 200, body: clone(cur), warnings };
    if (method === 'DELETE') return { code: 200, body: this.remove(r, key, cur), warnings };
    let next: Obj;
    if (method === 'PUT') next = clone(body as Obj);
    else if (method === 'PATCH') {
      if (!contentType.startsWith('application/merge-patch+json')) throw new HttpError(415, 'UnsupportedMediaType', `this test server implements only application/merge-patch+json, got ${contentType}`);
      next = mergePatch(clone(cur), body) as Obj;
    } else throw new HttpError(405, 'MethodNotAllowed', `${method} not allowed`);
    const precondition = (body as Obj)?.metadata?.resourceVersion;
    if (precondition !== undefined && precondition !== cur.metadata.resourceVersion) {
      throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${r.collection.split('/').at(-1)} "${r.name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    return { code: 200, body: this.update(r, key, col, cur, next, warnings), warnings };
  }

  private prune(o: Obj, col: Collection, warnings: string[]): void {
    const dropped: string[] = [];
    const { metadata, apiVersion, kind, ...rest } = o;
    prune(rest, col.schema, '', dropped);
    for (const k of Object.keys(o)) if (!['metadata', 'apiVersion', 'kind'].includes(k) && !(k in rest)) delete o[k];
    void metadata; void apiVersion; void kind;
    for (const d of dropped) warnings.push(`unknown field "${d.slice(1)}"`);
    this.pruned.push(...dropped.map((d) => `${col.kind}/${o.metadata.name}${d}`));
  }

  private update(r: ReturnType<FakeApiServer['route']>, key: string, col: Collection, cur: Obj, next: Obj, warnings: string[]): Obj {
    const out: Obj = clone(cur);
    if (r.status) {
      out.status = next.status; // the status subresource changes status only
    } else {
      for (const k of Object.keys(out)) if (!['metadata', 'status', 'apiVersion', 'kind'].includes(k)) delete out[k];
      for (const [k, v] of Object.entries(next)) if (k !== 'metadata' && k !== 'status' && k !== 'apiVersion' && k !== 'kind') out[k] = v;
      if (!col.schema) out.status = next.status;
      const m = next.metadata ?? {};
      for (const f of ['labels', 'annotations', 'finalizers', 'ownerReferences'] as const) {
        if (m[f] === undefined) delete out.metadata[f];
        else out.metadata[f] = m[f];
      }
      const before = (cur.metadata.finalizers as string[] | undefined) ?? [];
      const after = (out.metadata.finalizers as string[] | undefined) ?? [];
      if (cur.metadata.deletionTimestamp && after.some((f) => !before.includes(f))) {
        throw new HttpError(422, 'Invalid', 'metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted');
      }
    }
    if (col.schema) this.prune(out, col, warnings);
    const specOf = (o: Obj) => Object.fromEntries(Object.entries(o).filter(([k]) => !['metadata', 'status', 'apiVersion', 'kind'].includes(k)));
    if (col.schema && !same(specOf(cur), specOf(out))) out.metadata.generation = ((cur.metadata.generation as number) ?? 0) + 1;
    if (same(cur, out)) return clone(cur); // a no-op write does not move resourceVersion
    if (out.metadata.deletionTimestamp && ((out.metadata.finalizers as string[] | undefined) ?? []).length === 0) {
      this.objects.delete(key);
      return this.record(r, out, 'DELETED');
    }
    return this.write(r, key, out, 'MODIFIED');
  }

  private remove(r: ReturnType<FakeApiServer['route']>, key: string, cur: Obj): Obj {
    if (((cur.metadata.finalizers as string[] | undefined) ?? []).length === 0) {
      this.objects.delete(key);
      return this.record(r, clone(cur), 'DELETED');
    }
    if (cur.metadata.deletionTimestamp) return clone(cur);
    const out = clone(cur);
    out.metadata.deletionTimestamp = new Date().toISOString();
    out.metadata.deletionGracePeriodSeconds = 0;
    if (this.collections.get(r.collection)?.schema) out.metadata.generation = ((cur.metadata.generation as number) ?? 0) + 1;
    return this.write(r, key, out, 'MODIFIED');
  }

  private write(r: ReturnType<FakeApiServer['route']>, key: string, o: Obj, type: 'ADDED' | 'MODIFIED'): Obj {
    this.objects.set(key, o);
    return this.record(r, o, type);
  }

  private record(r: ReturnType<FakeApiServer['route']>, o: Obj, type: HistoryEntry['type']): Obj {
    o.metadata.resourceVersion = String(++this.rv);
    const entry: HistoryEntry = { rv: this.rv, collection: r.collection, namespace: r.namespace, type, object: clone(o) };
    this.history.push(entry);
    this.changes.push(`${type} ${r.collection.split('/').at(-1)}/${o.metadata.name}`);
    for (const w of this.watchers) if (w.collection === entry.collection && w.namespace === entry.namespace) w.res.write(`${JSON.stringify({ type, object: entry.object })}\n`);
    return clone(o);
  }

  private watch(r: ReturnType<FakeApiServer['route']>, q: URLSearchParams, res: ServerResponse): void {
    const begin = () => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
      const from = q.get('resourceVersion') ?? '';
      const col = this.collections.get(r.collection)!;
      if (from === '' || from === '0') {
        for (const o of this.list(r.collection, r.namespace)) res.write(`${JSON.stringify({ type: 'ADDED', object: o })}\n`);
      } else if (Number(from) < this.compactedBelow) {
        // What the API server does for an expired resourceVersion: a 200 watch whose only event
        // is an ERROR carrying a 410 Status, then the end of the stream.
        this.goneServed++;
        res.end(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${this.compactedBelow - 1})`, reason: 'Expired', code: 410 } })}\n`);
        return;
      } else {
        for (const h of this.history) {
          if (h.rv > Number(from) && h.collection === r.collection && h.namespace === r.namespace) res.write(`${JSON.stringify({ type: h.type, object: h.object })}\n`);
        }
      }
      const w: Watcher = { collection: r.collection, namespace: r.namespace, res, bookmarks: q.get('allowWatchBookmarks') === 'true' };
      this.watchers.add(w);
      void col;
      const timeout = Number(q.get('timeoutSeconds') ?? 0);
      const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
      res.on('close', () => {
        clearTimeout(timer);
        this.watchers.delete(w);
      });
    };
    if (this.heldWatches) this.heldWatches.push(begin);
    else begin();
  }

  private sendBookmarks(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      const col = this.collections.get(w.collection)!;
      w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { apiVersion: col.apiVersion, kind: col.kind, metadata: { resourceVersion: String(this.rv) } } })}\n`);
    }
  }
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  if (chunks.length === 0) return undefined;
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'BadRequest', `the request body is not JSON: ${text.slice(0, 80)}`);
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  if (res.headersSent) return;
  res.writeHead(code, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

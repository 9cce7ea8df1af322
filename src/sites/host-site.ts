// A host site reached over HTTPS with mutual TLS: the remote driver, and the client half of the
// embedded one (which talks to its in-process agent over a real loopback socket too).
import type { CertBundle } from '../transport/certs.ts';
import { API, type RelationshipView } from '../transport/agent-api.ts';
import { createMtlsClient, type MtlsClient } from '../transport/mtls.ts';
import type { Site, SiteSnapshot, SiteVm } from './site.ts';

export interface HostSiteOptions {
  name: string;
  endpoint: string;
  /** The operator's certificate bundle. */
  tls: CertBundle;
  embedded?: boolean;
  dataDir?: string;
  /** Runs after the client is closed (the embedded driver stops its agent here). */
  onClose?: () => Promise<void>;
  /** @default 30000 */
  timeoutMs?: number;
}

export class HostSite implements Site {
  readonly name: string;
  readonly endpoint: string;
  readonly embedded: boolean;
  readonly dataDir: string | undefined;
  readonly #client: MtlsClient;
  readonly #onClose: (() => Promise<void>) | undefined;

  constructor(opts: HostSiteOptions) {
    this.name = opts.name;
    this.endpoint = opts.endpoint;
    this.embedded = opts.embedded ?? false;
    this.dataDir = opts.dataDir;
    this.#onClose = opts.onClose;
    this.#client = createMtlsClient({ ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key, baseUrl: opts.endpoint, timeoutMs: opts.timeoutMs ?? 30_000 });
  }

  async request<T = unknown>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: object): Promise<T> {
    const res = await this.#client.request(method, path, body);
    return (res.body.length ? res.json<T>() : undefined) as T;
  }

  async snapshot(): Promise<SiteSnapshot> {
    try {
      const [vms, relationships] = await Promise.all([
        this.request<SiteVm[]>('GET', API.vms),
        this.request<RelationshipView[]>('GET', API.relationships),
      ]);
      return { name: this.name, reachable: true, vms, relationships };
    } catch (e) {
      return { name: this.name, reachable: false, error: (e as Error).message };
    }
  }

  async close(): Promise<void> {
    this.#client.close();
    await this.#onClose?.();
  }
}

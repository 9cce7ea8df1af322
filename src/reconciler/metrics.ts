// Prometheus metrics of the observed replication (`drsite run --metrics-port`): lag, pending
// bytes, bytes shipped, cycles and health per ProtectedVM, refreshed from each pass's observation.
import { createServer, type Server } from 'node:http';
import { Gauge, Registry } from 'prom-client';
import type { Observation } from './observe-sites.ts';

export class ReplicationMetrics {
  readonly registry = new Registry();
  readonly #lag = new Gauge({ name: 'drsite_replication_lag_seconds', help: 'Seconds the replica is behind the primary', labelNames: ['vm'], registers: [this.registry] });
  readonly #pending = new Gauge({ name: 'drsite_pending_bytes', help: 'Bytes changed on the primary not yet replicated', labelNames: ['vm'], registers: [this.registry] });
  readonly #shipped = new Gauge({ name: 'drsite_bytes_shipped', help: 'Bytes of sealed logs sent to the replica by the current relationship', labelNames: ['vm'], registers: [this.registry] });
  readonly #ok = new Gauge({ name: 'drsite_cycles_successful', help: 'Successful replication cycles (current relationship)', labelNames: ['vm'], registers: [this.registry] });
  readonly #missed = new Gauge({ name: 'drsite_cycles_missed', help: 'Missed replication cycles (current relationship)', labelNames: ['vm'], registers: [this.registry] });
  readonly #health = new Gauge({ name: 'drsite_health', help: '1 for the replication health the VM is in, 0 for the others', labelNames: ['vm', 'health'], registers: [this.registry] });

  update(obs: Observation): void {
    for (const [name, rel] of Object.entries(obs.observed.relationships)) {
      const view = obs.current.get(name)?.primaryView;
      this.#lag.set({ vm: name }, rel.lagSeconds ?? 0);
      this.#pending.set({ vm: name }, rel.pendingBytes);
      if (view) {
        this.#shipped.set({ vm: name }, view.bytesShipped ?? 0);
        this.#ok.set({ vm: name }, view.statistics.successfulReplicationCount);
        this.#missed.set({ vm: name }, view.statistics.missedReplicationCount);
      }
      for (const h of ['Normal', 'Warning', 'Critical']) this.#health.set({ vm: name, health: h }, rel.health === h ? 1 : 0);
    }
  }

  /** Serves GET /metrics on 127.0.0.1:port (0 = any free port). */
  async serve(port: number): Promise<{ server: Server; port: number }> {
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (e: Error) => res.writeHead(500).end(e.message),
      );
    });
    await new Promise<void>((resolve, reject) => server.listen(port, '127.0.0.1', resolve).once('error', reject));
    return { server, port: (server.address() as { port: number }).port };
  }
}

// Case 6, failover latency (latest point, and test failover) for a 4 GiB VM. The agent has no
// failover operations yet, so this case reports "not built yet" instead of measuring a stand-in.
import type { BenchCase, CaseResult } from '../lib/types.ts';

export const failover: BenchCase = {
  name: 'failover',
  title: '6. Failover latency, 4 GiB VM',
  goal: 'failover to the latest point <= 2 s; test failover <= 1 s',
  async run(): Promise<CaseResult> {
    return {
      status: 'not-built',
      scenarios: [],
      notes: ['the agent API has no failover or test-failover operation yet (src/agent/agent.ts routes); measure once they exist'],
    };
  },
};

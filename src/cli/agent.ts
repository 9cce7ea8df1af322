// `drsite agent --config <file>`: runs the host agent until SIGTERM/SIGINT, then stops cleanly
// (closing the trackers keeps change-tracking continuity for the next start).
import { Agent } from '../agent/agent.ts';
import { loadAgentConfig } from '../agent/config.ts';
import type { Io } from './output.ts';

export async function agentCommand(opts: { config: string }, io: Io): Promise<number> {
  const config = await loadAgentConfig(opts.config);
  const agent = await Agent.start(config);
  io.err(JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'agent listening', name: config.name, url: agent.url, nbd: agent.nbdDir }));
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await agent.stop();
  return 0;
}

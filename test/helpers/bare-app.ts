import { pino } from 'pino'
import { buildApp, type HttpLimits } from '../../src/app.js'
import type { LogHub } from '../../src/logs/log-hub.js'
import type { ProjectStore } from '../../src/projects/store.js'
import type { ExperimentManager } from '../../src/runner/experiment-manager.js'
import { Scheduler } from '../../src/scheduler/scheduler.js'
import { LogSink } from './harness.js'

/** The HTTP app with no domain behind it but this log hub (no projects, no experiments), logging into a sink. */
export async function bareApp(hub: LogHub, http?: Partial<HttpLimits>) {
  const logs = new LogSink()
  const app = await buildApp(
    {
      projects: { get: () => undefined } as unknown as ProjectStore,
      scheduler: new Scheduler(),
      experiments: {} as unknown as ExperimentManager,
      logHub: hub,
      machineUrl: 'http://machine:5081',
      machineId: () => 'm1',
      hostname: () => 'box',
      health: { docker: async () => undefined, fglab: async () => undefined },
    },
    { logger: pino({ level: 'debug' }, logs), ...(http && { http }) },
  )
  return { app, logs }
}

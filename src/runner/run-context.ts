import type { Logger } from 'pino'
import type { Outbox } from '../fglab/outbox.js'
import type { LogHub } from '../logs/log-hub.js'
import type { Metrics } from '../metrics.js'
import type { Project } from '../projects/schema.js'
import type { Ledgers } from '../results/ledger.js'
import type { Lease, Scheduler } from '../scheduler/scheduler.js'
import type { SystemCharts } from '../sysstats/charts.js'
import type { Clock } from '../util/clock.js'
import { buildArgv, type OptionValue } from './argv.js'
import type { DockerRuntime } from './docker-runtime.js'
import type { Journal, RunRecord } from './journal.js'
import { KilledBeforeStartError, type ExitInfo, type Runtime } from './runtime.js'

/** What every run shares: the services it reports to and keeps its state in. */
export interface RunContext {
  journal: Journal
  outbox: Outbox
  ledgers: Ledgers
  logHub: LogHub
  scheduler: Scheduler
  runtimes: { docker: DockerRuntime; process: Runtime }
  log: Logger
  clock: Clock
  killGraceMs: number
  /** How long a results file must be quiet before the watch sends it (ms). */
  resultsStableMs?: number
  /** FGLab's id for this machine, once known. */
  machineId: () => string | undefined
  /** Aborted when FGMachine shuts down: containers are let go (they run on), waits end. */
  shutdown: AbortSignal
  /** Counts starts and ends (src/metrics.ts); none in rigs that do not look. */
  metrics?: Metrics
  /** Samples each running experiment for its system chart (src/sysstats); none when turned off. */
  system?: SystemCharts
}

/** How a run stopped being this FGMachine's business. */
export type Settled =
  /** Fully reported and forgotten. */
  | { done: true }
  /** Fully reported, but its container could not be removed: to be removed later. */
  | { done: true; containerLeft: string }
  /** FGMachine shuts down: the next start takes it up from its record. */
  | { done: false }

/** The program's arguments: the project's args, the options in its style, and the GPU flag. */
export function experimentArgv(project: Project, body: Record<string, OptionValue>, lease: Lease): string[] {
  const argv = buildArgv(project.args, body, project.options, project.boolean)
  if (project.gpu_command && lease.gpus.length > 0) {
    // Inside a container its GPUs are numbered from 0; a local process sees the host's numbering.
    argv.push(project.gpu_command, (project.image ? lease.gpus.map((_, i) => i) : lease.gpus.map((g) => g.index)).join(','))
  }
  return argv
}

/** The experiment's environment: the project's, and what every experiment gets. */
export function experimentEnv(project: Project, r: Pick<RunRecord, 'id' | 'resultsDir'>): Record<string, string> {
  return { ...project.env, FGLAB_EXPERIMENT_ID: r.id, FGLAB_PROJECT_ID: project.id, FGLAB_RESULTS_DIR: r.resultsDir }
}

/** How a launch that threw ends the experiment. */
export function startFailure(err: unknown, log: Logger, publish: (text: string) => void): ExitInfo {
  const reason = (err as Error).message
  if (err instanceof KilledBeforeStartError) {
    log.info('experiment killed before its container was made')
    return { exitCode: null, error: reason }
  }
  log.error({ reason }, 'experiment failed to start')
  publish(`[fgmachine] failed to start: ${reason}\n`)
  return { exitCode: null, error: `failed to start: ${reason}` }
}

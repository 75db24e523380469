import path from 'node:path'
import type { Logger } from 'pino'
import type { Outbox } from '../fglab/outbox.js'
import type { LogHub, Stream } from '../logs/log-hub.js'
import type { Project } from '../projects/schema.js'
import { ResultsCollector } from '../results/collector.js'
import type { Lease, Scheduler } from '../scheduler/scheduler.js'
import { isObjectId } from '../util/ids.js'
import { buildArgv, type OptionValue } from './argv.js'
import { BadRequestError, ConflictError, NoCapacityError, NotFoundError } from './errors.js'
import type { ExitInfo, RunHandle, Runtime } from './runtime.js'

export type ExperimentState = 'starting' | 'running' | 'stopping' | 'reporting'

export interface Experiment {
  id: string
  project: Project
  lease: Lease
  state: ExperimentState
  startedAt: Date
  killed: boolean
  handle?: RunHandle
}

export interface ExperimentManagerDeps {
  scheduler: Scheduler
  logHub: LogHub
  outbox: Outbox
  runtimes: { docker: Runtime; process: Runtime }
  log: Logger
  /** FGLab's id for this machine, once known. */
  machineId: () => string | undefined
  killGraceMs: number
  /** How long a results file must be still before the watch sends it (ms). */
  resultsStableMs?: number
}

/**
 * The life of each experiment: reserve, launch, stream output, collect
 * results, report, release, clean up. Reservation is synchronous (no await
 * between the capacity check and the lease); every path after it releases the
 * lease exactly once.
 */
export class ExperimentManager {
  #experiments = new Map<string, Experiment>()
  #done = new Set<Promise<void>>()

  constructor(private readonly deps: ExperimentManagerDeps) {}

  get(id: string): Experiment | undefined {
    return this.#experiments.get(id)
  }

  list(): Experiment[] {
    return [...this.#experiments.values()]
  }

  /**
   * Start one experiment for FGLab. Synchronous up to the reservation: throws
   * NoCapacityError when the project is unknown or full. The run goes on in
   * the background; its failures are reported to FGLab, not thrown here.
   */
  start(projectId: string, body: Record<string, unknown>, project: Project | undefined): Experiment {
    const id = body._id
    if (!isObjectId(id)) throw new BadRequestError('_id must be an FGLab experiment id (24 hex digits)')
    if (!project) throw new NoCapacityError()
    if (this.#experiments.has(id)) throw new ConflictError(`experiment ${id} is already running here`)
    const lease = this.deps.scheduler.reserve(id, project)
    if (!lease) throw new NoCapacityError()
    const exp: Experiment = { id, project, lease, state: 'starting', startedAt: new Date(), killed: false }
    this.#experiments.set(id, exp)
    const run = this.#run(exp, body as Record<string, OptionValue>)
    this.#done.add(run)
    void run.finally(() => this.#done.delete(run))
    return exp
  }

  /** Stop a running experiment; it ends as `fail`. */
  kill(id: string): Experiment {
    if (!isObjectId(id)) throw new BadRequestError('experiment id must be 24 hex digits')
    const exp = this.#experiments.get(id)
    if (!exp) throw new NotFoundError(`experiment ${id} is not running here`)
    if (!exp.killed) {
      exp.killed = true
      this.deps.log.info({ experimentId: id }, 'killing experiment')
      this.#publish(id, 'stderr', '[fgmachine] experiment killed\n')
      if (exp.handle && exp.state === 'running') {
        exp.state = 'stopping'
        exp.handle.stop(this.deps.killGraceMs).catch((err: Error) => this.deps.log.error({ experimentId: id, err: err.message }, 'failed to stop experiment'))
      }
    }
    return exp
  }

  /**
   * "Reset capacity": free whatever is held by no live experiment. Capacity
   * held by experiments still running stays held: their programs still use it.
   */
  resetCapacity(): { released: string[]; held: string[] } {
    const live = new Set(this.#experiments.keys())
    const released = this.deps.scheduler.retainOnly(live)
    return { released, held: [...live] }
  }

  /** Wait until every experiment started so far is fully reported. */
  async idle(): Promise<void> {
    while (this.#done.size > 0) await Promise.all(this.#done)
  }

  /** On shutdown: stop every running experiment (SIGKILL after `graceMs`) and wait until they are reported. */
  async stopAll(graceMs = this.deps.killGraceMs): Promise<void> {
    for (const exp of this.#experiments.values()) {
      if (exp.killed) continue
      exp.killed = true
      this.#publish(exp.id, 'stderr', '[fgmachine] FGMachine is shutting down: experiment stopped\n')
      if (exp.handle && exp.state === 'running') {
        exp.state = 'stopping'
        exp.handle.stop(graceMs).catch(() => undefined)
      }
    }
    await this.idle()
  }

  #publish(id: string, stream: Stream, text: string): void {
    this.deps.logHub.publish(id, stream, text)
  }

  async #run(exp: Experiment, body: Record<string, OptionValue>): Promise<void> {
    const { id, project } = exp
    const log = this.deps.log.child({ experimentId: id, projectId: project.id })
    const outbox = this.deps.outbox
    const resultsDir = path.join(project.resultsDir, id)
    const collector = new ResultsCollector({
      experimentId: id,
      dir: resultsDir,
      log,
      stableMs: this.deps.resultsStableMs,
      onFile: (file) => outbox.enqueue(id, { kind: 'results-file', path: file }),
    })
    const runtime = project.image ? this.deps.runtimes.docker : this.deps.runtimes.process
    let exit: ExitInfo
    try {
      await collector.start(Boolean(project.image && project.user))
      const argv = buildArgv(project.args, body, project.options, project.boolean)
      if (project.gpu_command && exp.lease.gpus.length > 0) {
        // Inside a container its GPUs are numbered from 0; a local process sees the host's numbering.
        const ids = project.image ? exp.lease.gpus.map((_, i) => i) : exp.lease.gpus.map((g) => g.index)
        argv.push(project.gpu_command, ids.join(','))
      }
      log.info({ runtime: runtime.kind, image: project.image, argv }, 'starting experiment')
      const handle = await runtime.launch({
        experimentId: id,
        project,
        argv,
        resultsDir,
        env: {
          ...project.env,
          FGLAB_EXPERIMENT_ID: id,
          FGLAB_PROJECT_ID: project.id,
          FGLAB_RESULTS_DIR: resultsDir,
        },
        lease: exp.lease,
        machineId: this.deps.machineId(),
        output: (stream, text) => {
          if (text === '') return
          this.#publish(id, stream, text)
          log.debug({ stream, text }, 'output')
        },
        status: (text) => this.#publish(id, 'stdout', text),
      })
      exp.handle = handle
      exp.state = 'running'
      log.info('experiment started')
      outbox.enqueue(id, { kind: 'started' })
      if (exp.killed) {
        exp.state = 'stopping'
        void handle.stop(this.deps.killGraceMs).catch(() => undefined)
      }
      exit = await handle.exited
    } catch (err) {
      const reason = (err as Error).message
      log.error({ reason }, 'experiment failed to start')
      this.#publish(id, 'stderr', `[fgmachine] failed to start: ${reason}\n`)
      exit = { exitCode: null, error: `failed to start: ${reason}` }
    }

    // The program has ended: its capacity is free again.
    this.deps.scheduler.release(id)
    exp.state = 'reporting'
    const success = exit.exitCode === 0 && !exp.killed
    const summary = exitSummary(exit, exp.killed)
    log.info({ ...summary, status: success ? 'success' : 'fail' }, 'experiment ended')
    if (!success && exit.error && !exit.error.startsWith('failed to start')) this.#publish(id, 'stderr', `[fgmachine] ${exit.error}\n`)

    try {
      await exp.handle?.dispose()
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'could not remove the container')
    }
    await collector.finalSweep()
    outbox.enqueue(id, { kind: 'update', fields: { _status: success ? 'success' : 'fail', FGMachine: summary } })
    outbox.enqueue(id, { kind: 'finished' })
    const allSent = await outbox.drain(id)
    if (!allSent) log.warn({ resultsDir }, 'shutting down before FGLab acknowledged everything: results folder kept')
    else if (!project.keep_results) await collector.cleanup()
    this.deps.logHub.end(id)
    this.#experiments.delete(id)
    log.info('experiment reported')
  }
}

/** Why it ended, as FGLab shows it on the experiment (`FGMachine` field). */
function exitSummary(exit: ExitInfo, killed: boolean): Record<string, unknown> {
  const s: Record<string, unknown> = { exit_code: exit.exitCode }
  if (exit.signal) s.signal = exit.signal
  if (exit.oomKilled) s.oom_killed = true
  if (killed) s.killed = true
  if (exit.error) s.error = exit.error
  return s
}

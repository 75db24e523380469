import path from 'node:path'
import type { Logger } from 'pino'
import type { Outbox } from '../fglab/outbox.js'
import type { LogHub, Stream } from '../logs/log-hub.js'
import type { Project } from '../projects/schema.js'
import { ResultsCollector } from '../results/collector.js'
import type { Scheduler } from '../scheduler/scheduler.js'
import { isObjectId } from '../util/ids.js'
import { buildArgv, type OptionValue } from './argv.js'
import type { DockerRuntime } from './docker-runtime.js'
import { BadRequestError, ConflictError, NoCapacityError } from './errors.js'
import { killLeftover } from './process-runtime.js'
import type { ExperimentRecord, Journal } from './journal.js'
import { KilledBeforeStartError, type ExitInfo, type LaunchSpec, type RunHandle, type Runtime } from './runtime.js'
import type { ContainerDetails, ContainerSummary } from '../docker/container-client.js'
import { LABELS, parseGpusLabel } from '../docker/labels.js'
import { realSleep } from '../util/retry.js'

export type ExperimentState = 'starting' | 'running' | 'stopping' | 'reporting'

export interface Experiment {
  id: string
  projectId: string
  record: ExperimentRecord
  state: ExperimentState
  /** Killed (by kill(), or at shutdown for a local process): `kill` is aborted. */
  readonly killed: boolean
  /** Aborted when the experiment is killed: a start still pulling its image gives up. */
  readonly kill: AbortController
  handle?: RunHandle
}

export interface ExperimentManagerDeps {
  scheduler: Scheduler
  logHub: LogHub
  outbox: Outbox
  journal: Journal
  runtimes: { docker: DockerRuntime; process: Runtime }
  log: Logger
  /** FGLab's id for this machine, once known. */
  machineId: () => string | undefined
  killGraceMs: number
  /** How long a results file must be still before the watch sends it (ms). */
  resultsStableMs?: number
  now?: () => number
}

/** The longest delay setTimeout takes (2^31 - 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1
/** After a timed-out experiment's stop failed, the next try comes this long after its grace period. */
const STOP_RETRY_MS = 5_000

/** Why the run stopped being watched: it ended, or FGMachine is shutting down and leaves it running. */
type Outcome = { exit: ExitInfo } | { detached: true }

/**
 * The life of each experiment: reserve, launch, stream output, collect
 * results, report, release, clean up. Reservation is synchronous (no await
 * between the capacity check and the lease); every path after it releases the
 * lease exactly once. Each step is written to the journal, so that a
 * restarted FGMachine can take up where this one stopped (`recover`).
 */
export class ExperimentManager {
  #experiments = new Map<string, Experiment>()
  /** Reported experiments whose container is still to be removed: experiment id → container id. */
  #leftContainers = new Map<string, string>()
  #done = new Set<Promise<void>>()
  #shutdown = new AbortController()
  /** Experiments finished while reconcile() runs: its list of containers may still show them. */
  #finishedWhileReconciling: Set<string> | undefined
  readonly #now: () => number

  constructor(private readonly deps: ExperimentManagerDeps) {
    this.#now = deps.now ?? Date.now
  }

  get(id: string): Experiment | undefined {
    return this.#experiments.get(id)
  }

  list(): Experiment[] {
    return [...this.#experiments.values()]
  }

  /** Whether new experiments are taken at all: not while shutting down, nor while the outbox is full. */
  accepting(): boolean {
    return !this.#shutdown.signal.aborted && !this.deps.outbox.full()
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
    if (!this.accepting()) throw new NoCapacityError()
    const lease = this.deps.scheduler.reserve(id, project)
    if (!lease) throw new NoCapacityError()
    const record: ExperimentRecord = {
      id,
      projectId: project.id,
      runtime: project.image ? 'docker' : 'process',
      resultsDir: path.join(project.resultsDir, id),
      keepResults: project.keep_results,
      timeoutS: project.timeout,
      lease,
      phase: 'accepted',
    }
    const exp = this.#add(record)
    try {
      this.deps.journal.write(record)
    } catch (err) {
      this.#experiments.delete(id)
      this.deps.scheduler.release(id)
      throw err
    }
    this.#track(exp, this.#run(exp, project, body as Record<string, OptionValue>))
    return exp
  }

  /**
   * Stop a running experiment; it ends as `fail`. An experiment not running
   * here (already ended, or never ours) is left as it is: undefined.
   */
  kill(id: string): Experiment | undefined {
    if (!isObjectId(id)) throw new BadRequestError('experiment id must be 24 hex digits')
    const exp = this.#experiments.get(id)
    if (!exp) {
      this.deps.log.info({ experimentId: id }, 'kill of an experiment that is not running here: nothing to do')
      return undefined
    }
    if (exp.state === 'reporting') return exp
    if (!exp.killed) {
      exp.kill.abort(new KilledBeforeStartError())
      this.deps.log.info({ experimentId: id }, 'killing experiment')
      this.#publish(id, 'stderr', '[fgmachine] experiment killed\n')
      // A restart must not report a killed experiment as a success.
      this.#save(exp, { killed: true })
    }
    // Again after a stop that failed (Docker unreachable): the state went back to running.
    this.#stop(exp, this.deps.killGraceMs)
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

  /** Wait until every experiment started so far is fully reported (or left running at shutdown). */
  async idle(): Promise<void> {
    while (this.#done.size > 0) await Promise.all(this.#done)
  }

  /**
   * Shutting down: accept nothing more. Containers run on: a restarted
   * FGMachine takes them up again. Local processes cannot outlive FGMachine:
   * they are stopped (SIGKILL after `graceMs`) and reported. `idle()` says
   * when all that is done.
   */
  shutdown(graceMs: number): void {
    this.#shutdown.abort()
    for (const exp of this.#experiments.values()) {
      if (exp.record.runtime !== 'process' || exp.killed) continue
      exp.kill.abort(new KilledBeforeStartError())
      this.#publish(exp.id, 'stderr', '[fgmachine] FGMachine is shutting down: local experiment stopped\n')
      this.#stop(exp, graceMs)
    }
  }

  /**
   * After a restart: take up every experiment the journal holds. Leases are
   * held again at once (so capacity answers are right from the first
   * request); containers are then looked up, and running ones followed,
   * ended ones finished. Nothing is launched again.
   */
  recover(): void {
    const records = this.deps.journal.loadAll()
    for (const record of records) {
      if (this.#experiments.has(record.id)) continue
      if (record.phase === 'done') {
        if (record.containerId) this.#leftContainers.set(record.id, record.containerId)
        else this.deps.journal.remove(record.id)
        continue
      }
      const holds = record.runtime === 'docker' && (record.phase === 'accepted' || record.phase === 'launched')
      if (holds) this.deps.scheduler.adopt(record.lease)
      const exp = this.#add(record)
      if (record.killed) exp.kill.abort(new KilledBeforeStartError())
      this.#track(exp, this.#resume(exp))
    }
    if (records.length) this.deps.log.info({ experiments: records.map((r) => `${r.id} (${r.runtime}, ${r.phase})`) }, 'taking up experiments from before the restart')
  }

  /**
   * Docker's labels are the truth about what runs: a container labelled as
   * this machine's that the journal does not know (the data folder was lost,
   * say) is taken up from its labels alone. One whose labels do not make an
   * experiment (no valid id or results folder), older than `graceMs`, is
   * removed. Containers without our labels, or another machine's, are never
   * touched. Retries until Docker answers.
   */
  async reconcile(machineId: string | undefined, graceMs: number): Promise<void> {
    // One at a time (a periodic one may come while Docker is down and the last still waits).
    if (!machineId || this.#finishedWhileReconciling) return
    const docker = this.deps.runtimes.docker
    this.#finishedWhileReconciling = new Set()
    try {
      await this.#reconcile(docker, machineId, graceMs)
    } finally {
      this.#finishedWhileReconciling = undefined
    }
  }

  async #reconcile(docker: DockerRuntime, machineId: string, graceMs: number): Promise<void> {
    for (let attempt = 0; !this.#shutdown.signal.aborted; attempt++) {
      let containers: ContainerSummary[]
      try {
        // First, so that the list below no longer holds them.
        await this.#removeLeftContainers(docker)
        containers = await docker.listOurs(machineId)
      } catch (err) {
        if (attempt === 0) this.deps.log.warn({ err: (err as Error).message }, 'cannot list containers yet; will try again')
        await realSleep(Math.min(30_000, 1000 * 2 ** attempt), this.#shutdown.signal).catch(() => undefined)
        continue
      }
      for (const c of containers) {
        const id = c.labels[LABELS.experiment]
        if (id && (this.#experiments.has(id) || this.#leftContainers.has(id) || this.#finishedWhileReconciling?.has(id))) continue
        const record = recordFromLabels(c)
        if (record) {
          this.deps.log.warn({ experimentId: record.id, containerId: c.id.slice(0, 12) }, 'taking up a container of this machine from its labels (no journal record)')
          if (record.phase === 'launched') this.deps.scheduler.adopt(record.lease)
          this.deps.journal.write(record)
          const exp = this.#add(record)
          this.#track(exp, this.#resume(exp))
        } else if (Date.now() - c.createdMs >= graceMs) {
          this.deps.log.warn({ containerId: c.id.slice(0, 12), name: c.name, state: c.state }, 'removing a container of this machine that belongs to no experiment it knows')
          await docker.remove(c.id).catch((err: Error) => this.deps.log.warn({ err: err.message }, 'could not remove it'))
        }
      }
      return
    }
  }

  /** Containers of fully reported experiments whose removal failed: removed here, never taken up again. */
  async #removeLeftContainers(docker: DockerRuntime): Promise<void> {
    for (const [id, containerId] of this.#leftContainers) {
      try {
        await docker.remove(containerId)
      } catch (err) {
        this.deps.log.warn({ experimentId: id, err: (err as Error).message }, 'still cannot remove the container of a reported experiment; will try again')
        continue
      }
      this.#leftContainers.delete(id)
      this.deps.journal.remove(id)
      this.deps.log.info({ experimentId: id, containerId: containerId.slice(0, 12) }, 'removed the container of a reported experiment')
    }
  }

  #add(record: ExperimentRecord): Experiment {
    const exp: Experiment = {
      id: record.id,
      projectId: record.projectId,
      record,
      state: record.phase === 'launched' ? 'running' : 'starting',
      kill: new AbortController(),
      get killed() {
        return this.kill.signal.aborted
      },
    }
    this.#experiments.set(record.id, exp)
    return exp
  }

  /**
   * Follow one experiment's run to its end. Whatever fails on the way (a full
   * disk, Docker dropping between two calls) is logged and the experiment is
   * taken up again a little later from where its journal stands: never left
   * holding its capacity with nobody watching it.
   */
  #track(exp: Experiment, run: Promise<void>): void {
    const p = run.catch(async (err: Error) => {
      this.deps.log.error({ experimentId: exp.id, err }, 'experiment bookkeeping failed; taking it up again shortly')
      await realSleep(5000, this.#shutdown.signal).catch(() => undefined)
      if (!this.#shutdown.signal.aborted && this.#experiments.get(exp.id) === exp) this.#track(exp, this.#resume(exp))
    })
    this.#done.add(p)
    void p.finally(() => this.#done.delete(p))
  }

  #publish(id: string, stream: Stream, text: string): void {
    this.deps.logHub.publish(id, stream, text)
  }

  #save(exp: Experiment, change: Partial<ExperimentRecord>): void {
    Object.assign(exp.record, change)
    this.deps.journal.write(exp.record)
  }

  #stop(exp: Experiment, graceMs: number): void {
    if (exp.handle && exp.state === 'running') {
      exp.state = 'stopping'
      exp.handle.stop(graceMs).catch((err: Error) => {
        this.deps.log.error({ experimentId: exp.id, err: err.message }, 'failed to stop experiment; kill it again to retry')
        if (exp.state === 'stopping') exp.state = 'running'
      })
    }
  }

  #collector(exp: Experiment, log: Logger): ResultsCollector {
    return new ResultsCollector({
      experimentId: exp.id,
      dir: exp.record.resultsDir,
      log,
      stableMs: this.deps.resultsStableMs,
      onFile: (file) => this.deps.outbox.enqueue(exp.id, { kind: 'results-file', path: file }),
    })
  }

  #launchSpec(exp: Experiment, project: Project, argv: string[], log: Logger): LaunchSpec {
    return {
      experimentId: exp.id,
      project,
      argv,
      resultsDir: exp.record.resultsDir,
      env: {
        ...project.env,
        FGLAB_EXPERIMENT_ID: exp.id,
        FGLAB_PROJECT_ID: project.id,
        FGLAB_RESULTS_DIR: exp.record.resultsDir,
      },
      lease: exp.record.lease,
      machineId: this.deps.machineId(),
      output: (stream, text) => {
        if (text === '') return
        this.#publish(exp.id, stream, text)
        log.debug({ stream, text }, 'output')
      },
      status: (text) => this.#publish(exp.id, 'stdout', text),
      killed: exp.kill.signal,
    }
  }

  async #run(exp: Experiment, project: Project, body: Record<string, OptionValue>): Promise<void> {
    const { id } = exp
    const log = this.deps.log.child({ experimentId: id, projectId: project.id })
    const collector = this.#collector(exp, log)
    const runtime = project.image ? this.deps.runtimes.docker : this.deps.runtimes.process
    let outcome: Outcome
    try {
      await collector.start(Boolean(project.image && project.user))
      const argv = buildArgv(project.args, body, project.options, project.boolean)
      if (project.gpu_command && exp.record.lease.gpus.length > 0) {
        // Inside a container its GPUs are numbered from 0; a local process sees the host's numbering.
        const ids = project.image ? exp.record.lease.gpus.map((_, i) => i) : exp.record.lease.gpus.map((g) => g.index)
        argv.push(project.gpu_command, ids.join(','))
      }
      log.info({ runtime: runtime.kind, image: project.image, argv }, 'starting experiment')
      const handle = await runtime.launch(this.#launchSpec(exp, project, argv, log))
      exp.handle = handle
      exp.state = 'running'
      this.#save(exp, { phase: 'launched', containerId: handle.containerId, pid: handle.pid, launchedMs: this.#now() })
      log.info('experiment started')
      this.deps.outbox.enqueue(id, { kind: 'started' })
      if (exp.killed) this.#stop(exp, this.deps.killGraceMs)
      outcome = await this.#supervise(exp, handle, log)
    } catch (err) {
      const reason = (err as Error).message
      if (err instanceof KilledBeforeStartError) {
        log.info('experiment killed before its container was made')
        outcome = { exit: { exitCode: null, error: reason } }
      } else {
        log.error({ reason }, 'experiment failed to start')
        this.#publish(id, 'stderr', `[fgmachine] failed to start: ${reason}\n`)
        outcome = { exit: { exitCode: null, error: `failed to start: ${reason}` } }
      }
    }
    if ('detached' in outcome) {
      await collector.stop()
      return
    }
    await this.#finish(exp, outcome.exit, collector, log)
  }

  /** Wait for the end, enforcing the project's timeout; or let go at shutdown (containers run on). */
  async #supervise(exp: Experiment, handle: RunHandle, log: Logger): Promise<Outcome> {
    let timedOut = false
    let timer: NodeJS.Timeout | undefined
    const limitS = exp.record.timeoutS
    if (limitS !== undefined) {
      const left = limitS * 1000 - (this.#now() - (exp.record.launchedMs ?? this.#now()))
      const deadline = this.#now() + Math.max(0, left)
      // setTimeout cannot wait more than about 24.8 days: wait in steps.
      const arm = () => {
        timer = setTimeout(() => {
          if (this.#now() < deadline) return arm()
          timedOut = true
          log.warn({ timeoutS: limitS }, 'experiment timed out: stopping it')
          this.#publish(exp.id, 'stderr', `[fgmachine] timed out after ${limitS} s: stopping\n`)
          this.#stop(exp, this.deps.killGraceMs)
          // A stop that failed (Docker unreachable) put it back to running: try again until it ends.
          timer = setInterval(() => {
            if (exp.state === 'running') this.#stop(exp, this.deps.killGraceMs)
          }, this.deps.killGraceMs + STOP_RETRY_MS)
        }, Math.min(MAX_TIMER_MS, Math.max(0, deadline - this.#now())))
      }
      arm()
    }
    let onAbort: (() => void) | undefined
    const detached = new Promise<Outcome>((resolve) => {
      if (exp.record.runtime !== 'docker') return
      onAbort = () => resolve({ detached: true })
      if (this.#shutdown.signal.aborted) onAbort()
      else this.#shutdown.signal.addEventListener('abort', onAbort, { once: true })
    })
    try {
      const outcome = await Promise.race([handle.exited.then((exit): Outcome => ({ exit })), detached])
      if ('exit' in outcome && timedOut) {
        return { exit: { ...outcome.exit, timedOut: true, error: `timed out after ${limitS} s` } }
      }
      return outcome
    } finally {
      clearTimeout(timer)
      if (onAbort) this.#shutdown.signal.removeEventListener('abort', onAbort)
    }
  }

  /** Take up one experiment after a restart. */
  async #resume(exp: Experiment): Promise<void> {
    const r = exp.record
    const log = this.deps.log.child({ experimentId: r.id, projectId: r.projectId })
    const collector = this.#collector(exp, log)
    if (r.phase === 'reporting') return this.#complete(exp, collector, log)
    let exit: ExitInfo | undefined = r.phase === 'exited' ? r.exit : undefined
    if (r.runtime === 'process') {
      // It may have outlived the crash (its own process group): it ends now, as FGMachine did.
      if (r.phase === 'launched' && r.pid && r.launchedMs && killLeftover(r.pid, r.launchedMs)) log.warn({ pid: r.pid }, 'ended a local experiment that outlived FGMachine')
      return this.#finish(exp, exit ?? { exitCode: null, error: 'FGMachine stopped while it ran: local processes end with FGMachine' }, collector, log)
    }
    const docker = this.deps.runtimes.docker
    let found: ContainerDetails | undefined
    for (;;) {
      try {
        found = await docker.find(r.id, r.containerId)
        break
      } catch (err) {
        if (this.#shutdown.signal.aborted) return
        log.warn({ err: (err as Error).message }, "cannot look for the experiment's container yet; trying again")
        await realSleep(2000, this.#shutdown.signal).catch(() => undefined)
      }
    }
    if (found) {
      exp.handle = docker.handleFor(found.id)
      exp.record.containerId = found.id
    }
    if (!exit) {
      if (!found) {
        exit = {
          exitCode: null,
          error: r.phase === 'accepted' ? 'FGMachine stopped before the experiment got a container' : 'its container is gone (removed outside FGMachine, or lost with the Docker daemon)',
        }
      } else if (found.state.running) {
        // Started exactly once, before the restart: follow it, never start it again.
        await collector.start()
        const handle = await docker.reattach(found.id, this.#resumeSpec(exp, log))
        exp.handle = handle
        exp.state = 'running'
        if (r.phase === 'accepted') this.deps.outbox.enqueue(r.id, { kind: 'started' })
        this.#save(exp, { phase: 'launched', containerId: found.id, launchedMs: r.launchedMs ?? found.state.startedMs ?? this.#now() })
        if (exp.killed) this.#stop(exp, this.deps.killGraceMs)
        const outcome = await this.#supervise(exp, handle, log)
        if ('detached' in outcome) return collector.stop()
        exit = outcome.exit
      } else if (found.state.startedMs === undefined) {
        exit = { exitCode: null, error: 'FGMachine stopped before the experiment started' }
      } else {
        if (r.phase === 'accepted') this.deps.outbox.enqueue(r.id, { kind: 'started' })
        const oom = found.state.oomKilled
        exit = {
          exitCode: found.state.exitCode,
          oomKilled: oom || undefined,
          error: oom ? 'out of memory: the container reached its memory limit and was killed' : found.state.error,
        }
      }
    }
    await this.#finish(exp, exit, collector, log)
  }

  /** Enough of a launch spec to follow a re-adopted container's output. */
  #resumeSpec(exp: Experiment, log: Logger): Pick<LaunchSpec, 'experimentId' | 'output' | 'status'> {
    return {
      experimentId: exp.id,
      output: (stream, text) => {
        if (text === '') return
        this.#publish(exp.id, stream, text)
        log.debug({ stream, text }, 'output')
      },
      status: (t) => this.#publish(exp.id, 'stdout', t),
    }
  }

  /** The program has ended: free its capacity, remove its container, send the last results and the status. */
  async #finish(exp: Experiment, exit: ExitInfo, collector: ResultsCollector, log: Logger): Promise<void> {
    const { id } = exp
    this.deps.scheduler.release(id)
    exp.state = 'reporting'
    this.#save(exp, { phase: 'exited', exit, killed: exp.killed })
    const success = exit.exitCode === 0 && !exp.killed && !exit.timedOut
    const summary = exitSummary(exit, exp.killed)
    log.info({ ...summary, status: success ? 'success' : 'fail' }, 'experiment ended')
    if (!success && exit.error && !exit.error.startsWith('failed to start')) this.#publish(id, 'stderr', `[fgmachine] ${exit.error}\n`)
    try {
      await exp.handle?.dispose()
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'could not remove the container; it is removed later')
      this.#save(exp, { containerLeft: true })
    }
    await collector.finalSweep()
    this.deps.outbox.enqueue(id, { kind: 'update', fields: { _status: success ? 'success' : 'fail', FGMachine: summary } })
    this.deps.outbox.enqueue(id, { kind: 'finished' })
    this.#save(exp, { phase: 'reporting' })
    await this.#complete(exp, collector, log)
  }

  /** Once FGLab has everything: remove the results folder and forget the experiment. */
  async #complete(exp: Experiment, collector: ResultsCollector, log: Logger): Promise<void> {
    exp.state = 'reporting'
    const allSent = await this.deps.outbox.drain(exp.id)
    if (!allSent) {
      log.info('shutting down before FGLab acknowledged everything: the reports are kept and sent after the restart')
      return
    }
    if (this.deps.outbox.takeUnsent(exp.id)) {
      log.warn({ resultsDir: exp.record.resultsDir }, 'results folder kept: some of its files could not be read and were not sent')
    } else if (!exp.record.keepResults) {
      await collector.cleanup()
    }
    const left = exp.record.containerLeft && exp.record.containerId
    if (left) {
      // Its labels must not make it an experiment to take up again: remembered until removed.
      this.#save(exp, { phase: 'done' })
      this.#leftContainers.set(exp.id, left)
    } else {
      this.deps.journal.remove(exp.id)
    }
    this.deps.logHub.end(exp.id)
    this.#finishedWhileReconciling?.add(exp.id)
    this.#experiments.delete(exp.id)
    log.info('experiment reported')
  }
}

/** Why it ended, as FGLab shows it on the experiment (`FGMachine` field). */
function exitSummary(exit: ExitInfo, killed: boolean): Record<string, unknown> {
  const s: Record<string, unknown> = { exit_code: exit.exitCode }
  if (exit.signal) s.signal = exit.signal
  if (exit.oomKilled) s.oom_killed = true
  if (exit.timedOut) s.timed_out = true
  if (killed) s.killed = true
  if (exit.error) s.error = exit.error
  return s
}

/** An experiment record from a container's labels, or undefined when they do not make one. */
function recordFromLabels(c: ContainerSummary): ExperimentRecord | undefined {
  const l = c.labels
  const id = l[LABELS.experiment]
  const resultsDir = l[LABELS.results]
  const cpuUnits = Number(l[LABELS.cpuUnits])
  const gpus = parseGpusLabel(l[LABELS.gpus] ?? '')
  if (!isObjectId(id) || !resultsDir || !path.isAbsolute(resultsDir) || path.basename(resultsDir) !== id) return undefined
  if (!Number.isInteger(cpuUnits) || cpuUnits < 0 || !gpus || (cpuUnits === 0 && gpus.length === 0)) return undefined
  const projectId = l[LABELS.project] ?? ''
  const timeoutS = Number(l[LABELS.timeout])
  return {
    id,
    projectId,
    runtime: 'docker',
    resultsDir,
    keepResults: l[LABELS.keepResults] === 'true',
    timeoutS: timeoutS > 0 ? timeoutS : undefined,
    lease: { experimentId: id, projectId, cpuUnits, gpus },
    // Created but never started counts as not launched; #resume then sees how it stands.
    phase: c.state === 'created' ? 'accepted' : 'launched',
    containerId: c.id,
  }
}

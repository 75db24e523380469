import path from 'node:path'
import type { ContainerSummary } from '../docker/container-client.js'
import { LABELS } from '../docker/labels.js'
import type { Outbox } from '../fglab/outbox.js'
import type { Project } from '../projects/schema.js'
import type { Refusal } from '../scheduler/refusal.js'
import type { DiskHealth } from '../util/disk.js'
import { isObjectId } from '../util/ids.js'
import type { OptionValue } from './argv.js'
import { BadRequestError, ConflictError, NoCapacityError } from './errors.js'
import type { RunRecord } from './journal.js'
import { reconcile, recover, type RecoveryHost } from './recovery.js'
import { Run } from './run.js'
import type { RunContext, Settled } from './run-context.js'
import { KilledBeforeStartError } from './runtime.js'

export interface ExperimentManagerDeps extends Omit<RunContext, 'shutdown'> {
  outbox: Outbox
  /** Whether the data folder takes writes (src/util/disk.ts DiskHealth, over the disk the journal writes to). */
  diskHealth?: Pick<DiskHealth, 'refusal'>
}

/**
 * The experiments this machine holds: admission (reserve, write down, run),
 * kill, capacity reset, shutdown, and recovery after a restart. Each
 * experiment's life is its Run's (run.ts); the manager keeps the set of them.
 */
export class ExperimentManager {
  #runs = new Map<string, Run>()
  #tracked = new Set<Promise<void>>()
  #shutdown = new AbortController()
  #left = new Map<string, string>()
  /** Experiments finished while reconcile() runs: its list of containers may still show them. */
  #finishedWhileReconciling: Set<string> | undefined
  /** Why this FGLab id is claimed by another FGMachine too, while its containers are there. */
  #conflict: string | undefined
  /** Why this FGLab id is another live FGMachine's (it answers as it at its address). */
  #sticky: string | undefined
  readonly #ctx: RunContext
  readonly #host: RecoveryHost

  constructor(private readonly deps: ExperimentManagerDeps) {
    this.#ctx = { ...deps, shutdown: this.#shutdown.signal }
    this.#host = {
      ctx: this.#ctx,
      outbox: deps.outbox,
      knows: (id) => this.#runs.has(id) || this.#left.has(id) || Boolean(this.#finishedWhileReconciling?.has(id)),
      takeUp: (record) => this.#track(this.#add(record), (run) => run.resume()),
      leftContainers: this.#left,
      claimedElsewhere: (containers) => this.#claimedElsewhere(containers),
    }
  }

  get(id: string): Run | undefined {
    return this.#runs.get(id)
  }

  list(): Run[] {
    return [...this.#runs.values()]
  }

  /** Why no new experiment is taken at all, if none is: FGMachine shuts down, its FGLab id is claimed elsewhere, or the outbox is full. */
  refusal(): Refusal | undefined {
    if (this.#shutdown.signal.aborted) return { cause: 'shutting_down', reason: 'FGMachine is shutting down' }
    const conflict = this.#sticky ?? this.#conflict
    if (conflict) return { cause: 'identity_conflict', reason: conflict }
    const disk = this.deps.diskHealth?.refusal()
    if (disk) return disk
    if (this.deps.outbox.full()) {
      const mb = (this.deps.outbox.bytes() / 1024 / 1024).toFixed(1)
      return {
        cause: 'outbox_full',
        reason: `the outbox is full: ${mb} MB of reports wait for FGLab (FGMACHINE_OUTBOX_MAX_MB); experiments are taken again once FGLab has taken half of it`,
      }
    }
    return undefined
  }

  /**
   * Start one experiment for FGLab. The capacity check and the reservation are
   * one synchronous step (NoCapacityError when the project is unknown or
   * full); the record is then written, and the run goes on in the background:
   * its failures are reported to FGLab, not thrown here.
   */
  async start(projectId: string, body: Record<string, unknown>, project: Project | undefined): Promise<Run> {
    const id = body._id
    if (!isObjectId(id)) throw new BadRequestError('_id must be an FGLab experiment id (24 hex digits)')
    if (!project) throw new NoCapacityError({ cause: 'unknown_project', reason: `project ${projectId} is not in projects.json` })
    if (this.#runs.has(id)) throw new ConflictError(`experiment ${id} is already running here`)
    const refused = this.refusal()
    if (refused) throw new NoCapacityError(refused)
    const lease = this.deps.scheduler.reserve(id, project)
    if (!lease) throw new NoCapacityError(this.deps.scheduler.refusal(project))
    const record: RunRecord = {
      id,
      projectId: project.id,
      runtime: project.image ? 'docker' : 'process',
      resultsDir: path.join(project.resultsDir, id),
      keepResults: project.keep_results,
      timeoutS: project.timeout,
      lease,
      phase: 'accepted',
      ...(!project.system_charts && { charts: false as const }),
    }
    const run = this.#add(record)
    try {
      await this.deps.journal.write(record)
    } catch (err) {
      this.#runs.delete(id)
      this.deps.scheduler.release(id)
      // The data folder is full or not writable: a refusal (501, with why), not an error.
      const disk = this.deps.diskHealth?.refusal()
      if (disk) throw new NoCapacityError(disk)
      throw err
    }
    this.#track(run, (r) => r.start(project, body as Record<string, OptionValue>))
    return run
  }

  /**
   * Stop a running experiment; it ends as `fail`. An experiment not running
   * here (already ended, or never ours) is left as it is: undefined.
   */
  kill(id: string): Run | undefined {
    if (!isObjectId(id)) throw new BadRequestError('experiment id must be 24 hex digits')
    const run = this.#runs.get(id)
    if (!run) {
      this.deps.log.info({ experimentId: id }, 'kill of an experiment that is not running here: nothing to do')
      return undefined
    }
    run.requestKill()
    return run
  }

  /**
   * "Reset capacity": free whatever is held by no live experiment. Capacity
   * held by experiments still running stays held: their programs still use it.
   */
  resetCapacity(): { released: string[]; held: string[] } {
    const live = new Set(this.#runs.keys())
    return { released: this.deps.scheduler.retainOnly(live), held: [...live] }
  }

  /** Wait until every experiment started so far is fully reported (or let go at shutdown). */
  async idle(): Promise<void> {
    while (this.#tracked.size > 0) await Promise.all(this.#tracked)
  }

  /**
   * Shutting down: accept nothing more. Containers run on: a restarted
   * FGMachine takes them up again. Local processes cannot outlive FGMachine:
   * they are stopped (SIGKILL after `graceMs`) and reported. `idle()` says
   * when all that is done.
   */
  shutdown(graceMs: number): void {
    this.#shutdown.abort()
    for (const run of this.#runs.values()) {
      if (run.record.runtime !== 'process' || run.killed) continue
      run.kill.abort(new KilledBeforeStartError())
      this.deps.logHub.publish(run.id, 'stderr', '[fgmachine] FGMachine is shutting down: local experiment stopped\n')
      run.stop(graceMs)
    }
  }

  /** After a restart: take up every experiment the journal holds (see recovery.ts). */
  recover(): Promise<void> {
    return recover(this.#host)
  }

  /** Take up containers of this machine that no record knows; remove strays (see recovery.ts). One at a time. */
  async reconcile(machineId: string | undefined, graceMs: number): Promise<void> {
    if (!machineId || this.#finishedWhileReconciling) return
    this.#finishedWhileReconciling = new Set()
    try {
      await reconcile(this.#host, machineId, graceMs)
    } finally {
      this.#finishedWhileReconciling = undefined
    }
  }

  /** Another FGMachine runs as this machine's FGLab id (registration found it): no experiment is taken until a restart. */
  identityConflict(reason: string): void {
    this.#sticky = reason
  }

  /** Containers of another FGMachine with this machine's FGLab id: said, and no experiment is taken while they are there. */
  #claimedElsewhere(containers: ContainerSummary[]): void {
    if (containers.length === 0) {
      if (this.#conflict) this.deps.log.info('no container of another FGMachine with this FGLab id is left: taking experiments again')
      this.#conflict = undefined
      return
    }
    const folders = [...new Set(containers.map((c) => c.labels[LABELS.data] || '(unknown)'))]
    const before = this.#conflict
    this.#conflict =
      `another FGMachine claims this machine's FGLab id (${containers[0]!.labels[LABELS.machine]}): ${containers.length} container(s) on this Docker engine carry it, ` +
      `started by the FGMachine whose data folder is ${folders.join(', ')}, not this one's. One of the two runs with a copy of the other's specs.json (a copied data volume, a cloned VM). ` +
      "This one never adopts, reports or removes them, and takes no experiments while they are there. To give one of the two an identity of its own: stop it, delete specs.json in its data folder, start it again (it registers with FGLab as a new machine)"
    // Said when it starts or changes, not at every look.
    if (this.#conflict !== before) this.deps.log.error({ containers: containers.map((c) => c.id.slice(0, 12)), dataFolders: folders }, this.#conflict)
  }

  #add(record: RunRecord): Run {
    const run = new Run(this.#ctx, record, (r, how) => this.#settled(r, how))
    this.#runs.set(record.id, run)
    return run
  }

  #settled(run: Run, how: Settled): void {
    if (this.#runs.get(run.id) === run) this.#runs.delete(run.id)
    if (!how.done) return
    if ('containerLeft' in how) this.#left.set(run.id, how.containerLeft)
    this.#finishedWhileReconciling?.add(run.id)
  }

  /**
   * See a run through. Whatever fails on the way (a full disk, Docker
   * dropping between two calls) is logged and the run is resumed a little
   * later from where its record stands: never left holding its capacity
   * with nobody watching it.
   */
  #track(run: Run, step: (run: Run) => Promise<void>): void {
    const p = step(run).catch(async (err: Error) => {
      if (this.#shutdown.signal.aborted) return
      this.deps.log.error({ experimentId: run.id, err }, 'experiment bookkeeping failed; taking it up again shortly')
      await this.deps.clock.sleep(5000, this.#shutdown.signal).catch(() => undefined)
      if (!this.#shutdown.signal.aborted && this.#runs.get(run.id) === run) this.#track(run, (r) => r.resume())
    })
    this.#tracked.add(p)
    void p.finally(() => this.#tracked.delete(p))
  }
}

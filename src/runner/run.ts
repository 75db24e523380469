import type { Logger } from 'pino'
import type { Report } from '../fglab/outbox.js'
import type { Stream } from '../logs/log-hub.js'
import type { Project } from '../projects/schema.js'
import { ResultsCollector } from '../results/collector.js'
import { containerSource, processGroupSource } from '../sysstats/sources.js'
import type { Ledger } from '../results/ledger.js'
import { retry } from '../util/retry.js'
import type { OptionValue } from './argv.js'
import type { RunRecord } from './journal.js'
import { killLeftover } from './process-runtime.js'
import { experimentArgv, experimentEnv, startFailure, type RunContext, type Settled } from './run-context.js'
import { exitSummary, succeeded } from './summary.js'
import { KilledBeforeStartError, type ExitInfo, type LaunchSpec, type RunHandle } from './runtime.js'
import { supervise } from './supervise.js'

export type RunState = 'starting' | 'running' | 'stopping' | 'reporting'

/**
 * One experiment, from its acceptance to its last report: a state machine
 * whose phases (journal.ts) are written to the journal *before* this object
 * believes them, so that a crash between any two steps is resumed from the
 * last one written. `start` (a new experiment) and `resume` (after a restart)
 * are two ways into the same machine; every step after them is the same.
 */
export class Run {
  #record: RunRecord
  state: RunState
  /** Aborted when the experiment is killed: a start still pulling its image gives up. */
  readonly kill = new AbortController()
  handle?: RunHandle
  #commits: Promise<void> = Promise.resolve()
  #collector: ResultsCollector | undefined
  #ledger: Ledger | undefined
  readonly #log: Logger
  /** Counted in fgmachine_experiments_running (and to be taken off it once). */
  #countedRunning = false
  /** It ended while this FGMachine watched (not before a restart): its report latency is known. */
  #endedHere = false

  constructor(
    private readonly ctx: RunContext,
    record: RunRecord,
    /** Told once, when the run is over (or let go at shutdown). */
    private readonly settled: (run: Run, how: Settled) => void,
  ) {
    this.#record = record
    this.state = record.phase === 'launched' ? 'running' : record.phase === 'accepted' ? 'starting' : 'reporting'
    this.#log = ctx.log.child({ experimentId: record.id, projectId: record.projectId })
    if (record.killed) this.kill.abort(new KilledBeforeStartError())
  }

  get id(): string {
    return this.#record.id
  }

  /** The record as last written to the journal. */
  get record(): Readonly<RunRecord> {
    return this.#record
  }

  get killed(): boolean {
    return this.kill.signal.aborted
  }

  /** A new experiment, its record written (phase accepted): launch it and see it through. */
  async start(project: Project, body: Record<string, OptionValue>): Promise<void> {
    const acceptedMs = this.ctx.clock.now()
    let handle: RunHandle
    try {
      await this.#open()
      await this.#collector!.start(Boolean(project.image && project.user))
      const argv = experimentArgv(project, body, this.#record.lease)
      const runtime = project.image ? this.ctx.runtimes.docker : this.ctx.runtimes.process
      this.#log.info({ runtime: runtime.kind, image: project.image, argv }, 'starting experiment')
      handle = await runtime.launch(this.#launchSpec(project, argv))
    } catch (err) {
      return this.#ended(startFailure(err, this.#log, (t) => this.#publish('stderr', t)))
    }
    // From here the program runs: whatever fails now is bookkeeping, never "failed to start".
    this.handle = handle
    this.state = 'running'
    await this.#commitSurely({ phase: 'launched', containerId: handle.containerId, pid: handle.pid, launchedMs: this.ctx.clock.now() })
    this.#log.info('experiment started')
    const metrics = this.ctx.metrics
    if (metrics) {
      metrics.experimentsStarted.inc()
      metrics.submitToRunning.observe(Math.max(0, this.ctx.clock.now() - acceptedMs) / 1000)
    }
    this.#running(true)
    this.#reportStarted()
    this.#watchSystem(project.memory)
    return this.#follow()
  }

  /** After a restart: take the experiment up from where its record stands. Nothing is launched again. */
  async resume(): Promise<void> {
    await this.#open()
    const r = this.#record
    // Ended: every end step again (each is idempotent: the ledger says what FGLab has), since the
    // reports queued just before a crash may not have reached the disk.
    if (r.phase === 'exited' || r.phase === 'reporting') return this.#afterExit()
    if (r.runtime === 'process') {
      // It may have outlived the crash (its own process group): it ends now, as FGMachine did.
      if (r.phase === 'launched' && r.pid && r.launchedMs && killLeftover(r.pid, r.launchedMs)) this.#log.warn({ pid: r.pid }, 'ended a local experiment that outlived FGMachine')
      return this.#ended({ exitCode: null, error: r.phase === 'launched' ? 'FGMachine stopped while it ran: local processes end with FGMachine' : 'FGMachine stopped before the experiment started' })
    }
    const docker = this.ctx.runtimes.docker
    const found = await this.#surely("look for the experiment's container", () => docker.find(r.id, r.containerId))
    if (found === null) return this.settled(this, { done: false })
    if (!found) {
      const error = r.phase === 'accepted' ? 'FGMachine stopped before the experiment got a container' : 'its container is gone (removed outside FGMachine, or lost with the Docker daemon)'
      return this.#ended({ exitCode: null, error })
    }
    if (found.state.running) {
      // Started exactly once, before the restart: follow it, never start it again.
      await this.#collector!.start()
      this.handle = await docker.reattach(found.id, { experimentId: r.id, output: (s, b) => this.#output(s, b), status: (t) => this.#publish('stdout', t) })
      this.state = 'running'
      await this.#commitSurely({ phase: 'launched', containerId: found.id, launchedMs: r.launchedMs ?? found.state.startedMs ?? this.ctx.clock.now() })
      this.#running(true)
      this.#reportStarted()
      // Its limit from the container itself: a run taken up from its labels has no project to ask.
      this.#watchSystem(found.memoryLimitBytes)
      return this.#follow()
    }
    if (found.state.startedMs === undefined) return this.#ended({ exitCode: null, error: 'FGMachine stopped before the experiment started' }, found.id)
    // It ran, and ended while FGMachine was down.
    this.#report({ kind: 'started' })
    const oom = found.state.oomKilled
    const error = oom ? 'out of memory: the container reached its memory limit and was killed' : found.state.error
    return this.#ended({ exitCode: found.state.exitCode, oomKilled: oom || undefined, error, endedMs: found.state.finishedMs }, found.id)
  }

  /** Stop the experiment (it ends `fail`): the kill is written down first, so a restart still reports it killed. */
  requestKill(): void {
    if (this.state === 'reporting') return
    const act = () => {
      this.kill.abort(new KilledBeforeStartError())
      this.stop(this.ctx.killGraceMs)
    }
    if (this.killed) return act() // again, after a stop that failed (Docker unreachable)
    this.#log.info('killing experiment')
    this.#publish('stderr', '[fgmachine] experiment killed\n')
    this.#commit({ killed: true }).then(act, (err: Error) => {
      this.#log.error({ err: err.message }, 'cannot write down the kill (disk full?); killing anyway')
      act()
    })
  }

  /** SIGTERM, SIGKILL after `graceMs`; a stop that fails (Docker unreachable) leaves it running, to be stopped again. */
  stop(graceMs: number): void {
    if (!this.handle || this.state !== 'running') return
    this.state = 'stopping'
    this.handle.stop(graceMs).catch((err: Error) => {
      this.#log.error({ err: err.message }, 'failed to stop experiment; kill it again to retry')
      if (this.state === 'stopping') this.state = 'running'
    })
  }

  /** Follow the running program to its end, or let it go at shutdown (containers run on). */
  async #follow(): Promise<void> {
    if (this.killed) this.stop(this.ctx.killGraceMs)
    const exit = await supervise(this, this.ctx, this.#log, (t) => this.#publish('stderr', t))
    if (exit === 'detached') {
      this.#running(false)
      await this.ctx.system?.stop(this.id)
      await this.#collector?.stop()
      return this.settled(this, { done: false })
    }
    return this.#ended(exit)
  }

  /** The program has ended: written down first, then its capacity is free. */
  async #ended(exit: ExitInfo, containerId?: string): Promise<void> {
    this.state = 'reporting'
    exit = { ...exit, endedMs: exit.endedMs ?? this.ctx.clock.now() }
    await this.#commitSurely({ phase: 'exited', exit, killed: this.killed, ...(containerId && { containerId }) })
    this.#endedHere = true
    this.ctx.scheduler.release(this.id)
    this.#running(false)
    this.ctx.metrics?.ended(exit, this.killed, this.#record.launchedMs)
    const { FGMachine: how, ...summary } = exitSummary(exit, this.killed, this.#record.launchedMs)
    this.#log.info({ how, ...summary, status: this.#success() ? 'success' : 'fail' }, 'experiment ended')
    if (!this.#success() && exit.error && !exit.error.startsWith('failed to start')) this.#publish('stderr', `[fgmachine] ${exit.error}\n`)
    return this.#afterExit()
  }

  /**
   * Remove the container, send the last results, then how it ended. Each step
   * may run again after a crash: a removed container is no error, a file or
   * report FGLab already has (the ledger says) is not sent again.
   */
  async #afterExit(): Promise<void> {
    this.state = 'reporting'
    await this.#open()
    const r = this.#record
    if (r.runtime === 'docker' && r.containerId && !r.containerLeft) {
      try {
        await (this.handle ?? this.ctx.runtimes.docker.handleFor(r.containerId)).dispose()
      } catch (err) {
        this.#log.warn({ err: (err as Error).message }, 'could not remove the container; it is removed later')
        await this.#commitSurely({ containerLeft: true })
      }
    }
    // The last system chart goes with the last sweep; its summary with how the program ended.
    const system = r.charts === false ? {} : ((await this.ctx.system?.finish(this.id, r.resultsDir)) ?? {})
    await this.#collector!.finalSweep()
    // A report settled before a restart is not sent again (the outbox asks the ledger).
    this.#report({ kind: 'summary', summary: { ...exitSummary(r.exit!, this.killed, r.launchedMs), ...system } })
    this.#report({ kind: 'status', status: this.#success() ? 'success' : 'fail' })
    this.#report({ kind: 'finished' })
    await this.#commitSurely({ phase: 'reporting' })
    return this.#settle()
  }

  /** Once every report has ended: the results folder goes (unless something in it never reached FGLab), then the record. */
  async #settle(): Promise<void> {
    this.state = 'reporting'
    await this.#open()
    if (!(await this.ctx.outbox.drain(this.id))) {
      this.#log.info('shutting down before every report ended: they are kept and sent after the restart')
      return this.settled(this, { done: false })
    }
    const r = this.#record
    if (this.#endedHere && r.exit?.endedMs !== undefined) this.ctx.metrics?.reportLatency.observe(Math.max(0, this.ctx.clock.now() - r.exit.endedMs) / 1000)
    const files = this.#ledger!.files()
    const keep = this.#ledger!.keepFolder()
    if (keep) this.#log.warn({ resultsDir: r.resultsDir, reason: keep }, 'results folder kept: not everything in it reached FGLab')
    else if (!r.keepResults) await this.#collector!.cleanup()
    const left = r.containerLeft ? r.containerId : undefined
    // Its labels must not make it an experiment to take up again: remembered until removed.
    if (left) await this.#commitSurely({ phase: 'done' })
    else await this.ctx.journal.remove(this.id)
    await this.ctx.ledgers.remove(this.id)
    await this.ctx.system?.forget(this.id)
    this.ctx.logHub.end(this.id)
    this.#log.info({ files: files.sent, ...(files.notSent && { notSent: files.notSent }) }, 'experiment reported')
    this.settled(this, left ? { done: true, containerLeft: left } : { done: true })
  }

  /** Sample the running program's CPU, memory and GPUs for its system chart (unless its project said no). */
  #watchSystem(memoryLimitBytes?: number): void {
    const system = this.ctx.system
    const r = this.#record
    const h = this.handle
    if (!system || r.charts === false || !h) return
    const source = h.containerId ? containerSource(this.ctx.runtimes.docker, h.containerId) : h.pid ? processGroupSource(h.pid) : undefined
    if (!source) return
    const target = {
      experimentId: r.id,
      resultsDir: r.resultsDir,
      source,
      gpus: r.lease.gpus.map((g) => g.index),
      startedMs: r.launchedMs ?? this.ctx.clock.now(),
      memoryLimitBytes,
      title: `${r.projectId} · experiment ${r.id}`,
    }
    system.watch(target)
  }

  /** In or out of fgmachine_experiments_running, once each way. */
  #running(on: boolean): void {
    if (this.#countedRunning === on) return
    this.#countedRunning = on
    this.ctx.metrics?.experimentsRunning[on ? 'inc' : 'dec']()
  }

  #success(): boolean {
    const exit = this.#record.exit
    return exit !== undefined && succeeded(exit, this.killed)
  }

  /** The ledger and the results collector, for either way in. */
  async #open(): Promise<void> {
    this.#ledger ??= await this.ctx.ledgers.open(this.id)
    const ledger = this.#ledger
    this.#collector ??= new ResultsCollector({
      experimentId: this.id,
      dir: this.#record.resultsDir,
      log: this.#log,
      stableMs: this.ctx.resultsStableMs,
      sent: (name, sig) => ledger.sentSignature(name) === sig,
      onFile: (file) => this.#report({ kind: 'file', path: file }),
    })
  }

  /** `started`, then the results files the watch has seen meanwhile: FGLab hears of the start first. */
  #reportStarted(): void {
    this.#report({ kind: 'started' })
    this.#collector!.release()
  }

  #report(report: Report): void {
    this.ctx.outbox.report(this.id, report)
  }

  /** Write a change to the journal, then believe it. Changes are written one after another, in order. */
  #commit(change: Partial<RunRecord>): Promise<void> {
    const p = this.#commits.then(async () => {
      const next = { ...this.#record, ...change }
      await this.ctx.journal.write(next)
      this.#record = next
    })
    this.#commits = p.catch(() => undefined)
    return p
  }

  /** A change that must be written (the program runs, or has ended): tried until the disk takes it. */
  async #commitSurely(change: Partial<RunRecord>): Promise<void> {
    const written = await this.#surely("write the experiment's record", async () => {
      await this.#commit(change)
      return true
    })
    // Shutting down with the disk refusing: stop here; the next start resumes from what the journal says.
    if (!written) throw new Error('FGMachine is shutting down before the experiment\'s record could be written')
  }

  /** `work`, tried with backoff until it succeeds; null when FGMachine shuts down first. */
  #surely<T>(what: string, work: () => Promise<T>): Promise<T | null> {
    const onRetry = (err: unknown, attempt: number) => {
      if (attempt === 1 || attempt % 10 === 0) this.#log.error({ err: (err as Error).message, attempt }, `cannot ${what}; trying again`)
    }
    const { sleep } = this.ctx.clock
    return retry(work, { baseMs: 500, maxMs: 30_000, sleep, signal: this.ctx.shutdown, retryable: () => true, onRetry }).catch((err: unknown) => {
      if (this.ctx.shutdown.aborted) return null
      throw err
    })
  }

  #publish(stream: Stream, text: string): void {
    this.ctx.logHub.publish(this.id, stream, text)
  }

  #output(stream: Stream, data: Buffer): void {
    this.ctx.logHub.publish(this.id, stream, data)
    if (this.#log.isLevelEnabled('debug')) this.#log.debug({ stream, text: data.toString() }, 'output')
  }

  #launchSpec(project: Project, argv: string[]): LaunchSpec {
    const r = this.#record
    return {
      experimentId: r.id,
      project,
      argv,
      resultsDir: r.resultsDir,
      env: experimentEnv(project, r),
      lease: r.lease,
      machineId: this.ctx.machineId(),
      output: (stream, data) => this.#output(stream, data),
      status: (text) => this.#publish('stdout', text),
      killed: this.kill.signal,
    }
  }
}

import { readFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import { FglabError, isRetryable, type FglabClient, type MachineSpecs } from './client.js'
import { realSleep, retry, type Backoff, type RetryOptions, type Sleep } from '../util/retry.js'
import { nodeDisk } from '../util/disk.js'
import { isObjectId } from '../util/ids.js'

/**
 * FGMachine's own field in specs.json (FGLab never sees it): the ids FGLab knew
 * this machine by before it registered again, newest first. Containers carry
 * the machine id they were started under (`fgmachine.machine`) and labels
 * cannot change, so containers labelled with one of these are still this
 * machine's: reconcile lists them too.
 */
export const PREVIOUS_IDS = 'fgmachine_previous_ids'
/** How many previous ids specs.json keeps (a re-registration is rare: an admin deleting the machine in FGLab). */
const MAX_PREVIOUS_IDS = 20

export interface RegistrationOptions {
  client: FglabClient
  log: Logger
  /** specs.json, which ties this machine to FGLab across restarts. */
  specsFile: string
  specs: () => MachineSpecs
  backoff?: Backoff
  sleep?: Sleep
  /**
   * How often the projects are sent again although unchanged (ms; default 5
   * minutes; Infinity: only on change). FGLab's answer is how a machine
   * deleted in FGLab is noticed.
   */
  refreshMs?: number
  /** Told each time FGLab gives this machine an id (not when specs.json had one). */
  onRegistered?: (machineId: string) => void
  /** Told when another live FGMachine answers as this machine at its former address (a copy of specs.json). */
  onConflict?: (reason: string) => void
}

/** For /health: registered, or why not and whether FGLab answered (it said no) or was not reached. */
export type RegistrationHealth = { ok: true } | { ok: false; error: string; fglabAnswered: boolean }

interface Failure {
  message: string
  /** FGLab (or something at its address) answered; false when it could not be reached or did not answer in time. */
  answered: boolean
}

/** FGLab answered the registration, but not with a machine document. */
class NoMachineIdError extends Error {
  readonly notJson: boolean
  constructor(answer: unknown) {
    const notJson = typeof answer === 'string'
    const text = notJson ? answer : (JSON.stringify(answer) ?? String(answer))
    super(`FGLab's answer to the registration has no machine _id${notJson ? ' (not JSON)' : ''}: ${text.slice(0, 200)}`)
    this.notJson = notJson
  }
}

const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err))

/** Whether FGLab answered at all (any HTTP status, or a 2xx that is not a machine). */
const fglabAnswered = (err: unknown): boolean => err instanceof NoMachineIdError || (err instanceof FglabError && err.status !== undefined)

/**
 * FGLab's answer for a machine id it does not know: 404 `{"error": "Machine ID … does not exist"}`
 * (docs/PROTOCOL.md). A 404 that is not FGLab's JSON (a proxy, a FGLAB_URL that is not FGLab)
 * does not count: registering again on it would leave a duplicate machine in FGLab.
 */
export function isUnknownMachine(err: unknown): boolean {
  if (!(err instanceof FglabError) || err.status !== 404) return false
  try {
    const body = JSON.parse(err.answer) as unknown
    return typeof body === 'object' && body !== null && 'error' in body
  } catch {
    return false
  }
}

/**
 * Says each distinct failure of a retried call once (at error when FGLab
 * answered with something no retry will change by itself: a 4xx, an answer
 * that is no machine; at warn when FGLab is down or failing), and the
 * repeats of the same failure at debug.
 */
class FailureLog {
  #last: string | undefined
  constructor(
    private readonly log: Logger,
    private readonly msg: string,
  ) {}

  note(err: unknown, attempt: number, waitMs: number, fields: Record<string, unknown> = {}): void {
    const status = err instanceof FglabError ? err.status : undefined
    const kind = err instanceof NoMachineIdError ? `no _id${err.notJson ? ' (not JSON)' : ''}` : status !== undefined ? `HTTP ${status}` : errorMessage(err)
    const serious = err instanceof NoMachineIdError || (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429)
    const level = kind === this.#last ? 'debug' : serious ? 'error' : 'warn'
    this.#last = kind
    this.log[level]({ ...fields, attempt, retryInMs: waitMs, err: errorMessage(err) }, this.msg)
  }
}

/**
 * Registers the machine with FGLab (the answer is kept in specs.json) and
 * tells FGLab its projects at start, on every change, and every `refreshMs`.
 * Nothing stops it for good: every failure is retried with backoff until it
 * succeeds or FGMachine shuts down. When FGLab answers that it no longer
 * knows the machine (deleted in FGLab), the machine registers again by
 * itself: a new id, kept in specs.json with the old ones as previous ids.
 * Reports go by experiment id and do not depend on the machine id.
 */
export class Registration {
  #machineId: string | undefined
  #previousIds: string[] = []
  #projects: Record<string, unknown> | undefined
  /** The projects FGLab last acknowledged (to tell a periodic check from a change in the log). */
  #sent: Record<string, unknown> | undefined
  #projectsDirty = false
  #refreshing = false
  #loop: Promise<void> | undefined
  #stop = new AbortController()
  #wake: (() => void) | undefined
  #idle = false
  #settledWaiters: Array<() => void> = []
  /** The last failure of registering, while not registered. */
  #failure: Failure | undefined
  /** Why this machine does not act as its FGLab id: another FGMachine runs as it. */
  #conflict: string | undefined
  /** specs.json as read at start. */
  #saved: Record<string, unknown> = {}
  /** The fields of the machine's description that differ from what FGLab was told. */
  #specsChanged: string[] = []
  /** The id FGLab said it does not know, until registered again. */
  #forgotten: string | undefined

  constructor(private readonly opts: RegistrationOptions) {}

  /** The id FGLab knows this machine by; undefined while not registered. */
  get machineId(): string | undefined {
    return this.#machineId
  }

  /** Every id this machine's containers may be labelled with: the current one, then those FGLab knew it by before. */
  get machineIds(): string[] {
    return [...(this.#machineId ? [this.#machineId] : []), ...this.#previousIds.filter((id) => id !== this.#machineId)]
  }

  health(): RegistrationHealth {
    if (this.#machineId) return { ok: true }
    const forgotten = this.#forgotten && `FGLab no longer knows machine ${this.#forgotten} (deleted in FGLab?)`
    if (this.#failure) {
      const error = forgotten ? `${forgotten}; registering again failed: ${this.#failure.message}` : this.#failure.message
      return { ok: false, error: `not registered: ${error}`, fglabAnswered: this.#failure.answered || forgotten !== undefined }
    }
    if (forgotten) return { ok: false, error: `not registered: ${forgotten}; registering again`, fglabAnswered: true }
    return { ok: false, error: 'not registered yet: registering with FGLab', fglabAnswered: false }
  }

  /** Read specs.json if there is one, then register (if needed) and send the projects, in the background. */
  async start(): Promise<void> {
    try {
      const saved = JSON.parse(await readFile(this.opts.specsFile, 'utf8')) as { _id?: unknown; [PREVIOUS_IDS]?: unknown }
      const previous = saved[PREVIOUS_IDS]
      if (Array.isArray(previous)) this.#previousIds = previous.filter(isObjectId).slice(0, MAX_PREVIOUS_IDS)
      if (isObjectId(saved._id)) {
        this.#machineId = saved._id
        this.#saved = saved
        this.#specsChanged = changedSpecs(saved, this.opts.specs())
        this.opts.log.info({ machineId: saved._id, specsFile: this.opts.specsFile }, 'machine known to FGLab (specs.json)')
      } else {
        this.opts.log.warn({ specsFile: this.opts.specsFile }, 'specs.json holds no machine _id; registering again')
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.opts.log.warn({ specsFile: this.opts.specsFile, err: (err as Error).message }, 'specs.json cannot be read; registering again')
      }
    }
    this.#loop ??= this.#run()
  }

  /** Send these projects to FGLab (after registering); a newer call supersedes an unsent older one. */
  updateProjects(projects: Record<string, unknown>): void {
    if (!this.#loop) throw new Error('Registration.start() must come before updateProjects()')
    this.#projects = projects
    this.#projectsDirty = true
    this.#idle = false
    this.#wake?.()
  }

  /** Resolves when registered and the latest projects are acknowledged (or refused), or on close (for tests and shutdown). */
  async settled(): Promise<void> {
    if (!this.#loop || this.#idle || this.#stop.signal.aborted) return
    await new Promise<void>((resolve) => this.#settledWaiters.push(resolve))
  }

  close(): void {
    this.#stop.abort()
  }

  #retryOpts(): Omit<RetryOptions, 'retryable'> {
    return {
      baseMs: this.opts.backoff?.baseMs ?? 1000,
      // At most 15 s between tries: FGLab back from an outage has this machine within that.
      maxMs: this.opts.backoff?.maxMs ?? 15_000,
      random: this.opts.backoff?.random,
      sleep: this.opts.sleep,
      signal: this.#stop.signal,
    }
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal
    while (!signal.aborted) {
      try {
        if (this.#conflict) await this.#wait()
        else if (!this.#machineId) await this.#register()
        else if (this.#specsChanged.length) await this.#updateSpecs()
        else if (this.#projects && this.#projectsDirty) await this.#sendProjects()
        else await this.#wait()
      } catch (err) {
        if (signal.aborted) break
        // Not expected: every call is retried within. Said, and tried again after a pause.
        this.opts.log.error({ err: errorMessage(err) }, 'registration with FGLab went wrong; trying again')
        await (this.opts.sleep ?? realSleep)(this.#retryOpts().maxMs, signal).catch(() => undefined)
      }
    }
    this.#settle()
  }

  /** Until the projects change, the next periodic check, or shutdown. */
  async #wait(): Promise<void> {
    this.#idle = true
    this.#settle()
    const woken = new AbortController()
    this.#wake = () => woken.abort()
    const signal = AbortSignal.any([this.#stop.signal, woken.signal])
    const refreshMs = this.opts.refreshMs ?? 5 * 60_000
    try {
      if (Number.isFinite(refreshMs)) {
        await (this.opts.sleep ?? realSleep)(refreshMs, signal)
        // Due: sent again although unchanged; FGLab's answer says whether it still knows this machine.
        this.#projectsDirty = true
        this.#refreshing = true
      } else {
        await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }))
      }
    } catch {
      // woken by a change, or shutting down
    } finally {
      this.#wake = undefined
      this.#idle = false
    }
  }

  #settle(): void {
    for (const resolve of this.#settledWaiters.splice(0)) resolve()
  }

  async #register(): Promise<void> {
    const log = this.opts.log
    const specs = this.opts.specs()
    const again = this.#forgotten
    log.info({ fglab: this.opts.client.baseUrl, address: specs.address }, again ? 'registering with FGLab again' : 'registering with FGLab')
    const failures = new FailureLog(log, 'registering with FGLab failed; retrying')
    let attempts = 0
    const doc = await retry(
      async () => {
        attempts++
        const answer = (await this.opts.client.registerMachine(specs)) as unknown
        if (typeof answer !== 'object' || answer === null || !isObjectId((answer as { _id?: unknown })._id)) throw new NoMachineIdError(answer)
        return answer as { _id: string } & Record<string, unknown>
      },
      {
        ...this.#retryOpts(),
        // Never for good: FGLab being down, failing, answering garbage or refusing may all change.
        retryable: () => true,
        onRetry: (err, attempt, waitMs) => {
          this.#failure = { message: errorMessage(err), answered: fglabAnswered(err) }
          failures.note(err, attempt, waitMs)
        },
      },
    )
    const previousIds = this.#previousIds
    const saved = previousIds.length ? { ...doc, [PREVIOUS_IDS]: previousIds } : doc
    // FGLab has the machine now: registering again because of a full disk would make another one.
    await retry(() => nodeDisk.writeAtomic(this.opts.specsFile, JSON.stringify(saved, null, 2) + '\n'), {
      ...this.#retryOpts(),
      retryable: () => true,
      onRetry: (err, attempt, waitMs) => {
        if (attempt === 1) log.error({ machineId: doc._id, specsFile: this.opts.specsFile, err: errorMessage(err), retryInMs: waitMs }, 'cannot write specs.json; trying again')
      },
    })
    this.#machineId = doc._id
    this.#failure = undefined
    this.#forgotten = undefined
    // Sent to the new id (again, after a re-registration).
    if (this.#projects) this.#projectsDirty = true
    if (again) {
      log.info({ machineId: doc._id, previousIds, specsFile: this.opts.specsFile, attempts }, `registered with FGLab again: machine ${doc._id} (was ${again}); its containers are still this machine's`)
    } else {
      log.info({ machineId: doc._id, specsFile: this.opts.specsFile, attempts }, 'registered with FGLab')
    }
    this.opts.onRegistered?.(doc._id)
  }

  async #sendProjects(): Promise<void> {
    const log = this.opts.log
    const machineId = this.#machineId!
    const projects = this.#projects!
    const check = this.#refreshing && projects === this.#sent
    this.#projectsDirty = false
    this.#refreshing = false
    const failures = new FailureLog(log, 'sending projects to FGLab failed; retrying')
    try {
      await retry(() => this.opts.client.updateProjects(machineId, projects), {
        ...this.#retryOpts(),
        retryable: (err) => isRetryable(err) && !isUnknownMachine(err),
        onRetry: (err, attempt, waitMs) => failures.note(err, attempt, waitMs, { machineId }),
      })
    } catch (err) {
      if (this.#stop.signal.aborted) return
      if (isUnknownMachine(err)) return this.#forget(machineId, err)
      // Sent again at the next change or check: never for good either.
      const hint = (err as FglabError).status === 404 ? ' (a 404 that is not FGLab\'s: is FGLAB_URL the address of FGLab itself?)' : ''
      log.error({ err: errorMessage(err), machineId }, `FGLab refused the projects${hint}; they are sent again at the next change or check`)
      return
    }
    this.#sent = projects
    if (check) log.debug({ machineId }, 'FGLab still knows this machine')
    else log.info({ projects: Object.keys(projects), machineId }, 'projects sent to FGLab')
  }

  /**
   * The machine's address, name or hardware differ from what FGLab was told
   * (a new port or hostname, a GPU added): its record is updated, not a new
   * machine registered, and specs.json with it.
   */
  async #updateSpecs(): Promise<void> {
    const log = this.opts.log
    const machineId = this.#machineId!
    const specs = this.opts.specs()
    const changed = this.#specsChanged
    this.#specsChanged = []
    // Another address for the same FGLab id: the machine moved, or this is a copy of its specs.json
    // while it runs on. Its former address says which: taking over its record would take its experiments.
    const former = typeof this.#saved.address === 'string' ? this.#saved.address : undefined
    if (changed.includes('address') && former && (await answersAs(former, machineId))) {
      this.#conflict =
        `another FGMachine runs as FGLab machine ${machineId} at ${former}, the address in this machine's specs.json: this one has a copy of its specs.json (a copied data folder, a cloned VM). ` +
        `It does not update FGLab's record, send projects or take experiments under that id. To run it as a machine of its own: stop it, delete ${this.opts.specsFile}, start it again (it registers as a new machine)`
      log.error({ machineId, former, address: specs.address }, this.#conflict)
      this.opts.onConflict?.(this.#conflict)
      return
    }
    const failures = new FailureLog(log, 'updating the machine in FGLab failed; retrying')
    try {
      await retry(() => this.opts.client.updateMachine(machineId, { ...specs }), {
        ...this.#retryOpts(),
        retryable: (err) => isRetryable(err) && !isUnknownMachine(err),
        onRetry: (err, attempt, waitMs) => failures.note(err, attempt, waitMs, { machineId }),
      })
    } catch (err) {
      if (this.#stop.signal.aborted) return
      log.error({ err: errorMessage(err), machineId, changed }, 'FGLab refused the machine\'s new description; it keeps the old one')
      return
    }
    const saved = { ...this.#saved, ...specs }
    await nodeDisk.writeAtomic(this.opts.specsFile, JSON.stringify(saved, null, 2) + '\n').catch((err: Error) =>
      log.warn({ err: err.message, specsFile: this.opts.specsFile }, 'cannot write specs.json: FGLab is updated again at the next start'),
    )
    log.info({ machineId, changed: Object.fromEntries(changed.map((k) => [k, specs[k as keyof MachineSpecs]])) }, `the machine's ${changed.join(', ')} changed: its record in FGLab is updated`)
  }

  /** FGLab does not know this machine (any more): register again, then send the projects again. */
  #forget(machineId: string, err: unknown): void {
    this.#machineId = undefined
    this.#forgotten = machineId
    this.#previousIds = [machineId, ...this.#previousIds.filter((id) => id !== machineId)].slice(0, MAX_PREVIOUS_IDS)
    this.#failure = undefined
    this.#projectsDirty = true
    this.opts.log.error(
      { machineId, err: errorMessage(err) },
      `FGLab no longer knows machine ${machineId} (deleted in FGLab?): registering again; reports of its experiments go on (they go by experiment id), its containers stay this machine's`,
    )
  }
}

/** The fields of the description FGLab has (specs.json) that differ from the machine's now. */
function changedSpecs(saved: Record<string, unknown>, now: MachineSpecs): string[] {
  return Object.entries(now)
    .filter(([k, v]) => k in saved && JSON.stringify(saved[k]) !== JSON.stringify(v))
    .map(([k]) => k)
}

/** Whether an FGMachine answers at `address` as FGLab machine `machineId` (its /health). */
async function answersAs(address: string, machineId: string): Promise<boolean> {
  try {
    const res = await fetch(`${address.replace(/\/+$/, '')}/health`, { signal: AbortSignal.timeout(3000) })
    const body = (await res.json()) as { machine_id?: unknown }
    return body.machine_id === machineId
  } catch {
    return false
  }
}

import { readFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import { isRetryable, type FglabClient, type MachineSpecs } from './client.js'
import { retry, type Backoff, type Sleep } from '../util/retry.js'
import { nodeDisk } from '../util/disk.js'
import { isObjectId } from '../util/ids.js'

export interface RegistrationOptions {
  client: FglabClient
  log: Logger
  /** specs.json, which ties this machine to FGLab across restarts. */
  specsFile: string
  specs: () => MachineSpecs
  backoff?: Backoff
  sleep?: Sleep
}

/**
 * Registers the machine with FGLab (once: the answer is kept in specs.json)
 * and tells FGLab its projects at start and on every change. FGLab being
 * down never stops FGMachine: every call is retried with backoff.
 */
export class Registration {
  #machineId: string | undefined
  #projects: Record<string, unknown> | undefined
  #projectsDirty = false
  #loop: Promise<void> | undefined
  #stop = new AbortController()
  #registered: Promise<string> | undefined

  constructor(private readonly opts: RegistrationOptions) {}

  get machineId(): string | undefined {
    return this.#machineId
  }

  /** Read specs.json if there is one; register in the background otherwise. */
  async start(): Promise<void> {
    try {
      const saved = JSON.parse(await readFile(this.opts.specsFile, 'utf8')) as { _id?: unknown }
      if (isObjectId(saved._id)) {
        this.#machineId = saved._id
        this.opts.log.info({ machineId: saved._id, specsFile: this.opts.specsFile }, 'machine known to FGLab (specs.json)')
      } else {
        this.opts.log.warn({ specsFile: this.opts.specsFile }, 'specs.json holds no machine _id; registering again')
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.opts.log.warn({ specsFile: this.opts.specsFile, err: (err as Error).message }, 'specs.json cannot be read; registering again')
      }
    }
    this.#registered = this.#machineId ? Promise.resolve(this.#machineId) : this.#register()
    this.#registered.catch(() => undefined)
  }

  /** Send these projects to FGLab (after registering); a newer call supersedes an unsent older one. */
  updateProjects(projects: Record<string, unknown>): void {
    if (!this.#registered) throw new Error('Registration.start() must come before updateProjects()')
    this.#projects = projects
    this.#projectsDirty = true
    if (!this.#loop) {
      this.#loop = this.#sendProjects().finally(() => (this.#loop = undefined))
    }
  }

  /** Resolves when the latest projects are acknowledged (for tests and shutdown). */
  async settled(): Promise<void> {
    while (this.#loop) await this.#loop
  }

  close(): void {
    this.#stop.abort()
  }

  #retryOpts(what: string) {
    return {
      baseMs: this.opts.backoff?.baseMs ?? 1000,
      maxMs: this.opts.backoff?.maxMs ?? 60_000,
      random: this.opts.backoff?.random,
      sleep: this.opts.sleep,
      signal: this.#stop.signal,
      retryable: isRetryable,
      onRetry: (err: unknown, attempt: number, waitMs: number) =>
        this.opts.log.warn({ attempt, retryInMs: waitMs, err: (err as Error).message }, `${what} failed; retrying`),
    }
  }

  async #register(): Promise<string> {
    const specs = this.opts.specs()
    this.opts.log.info({ fglab: this.opts.client.baseUrl, address: specs.address }, 'registering with FGLab')
    try {
      const doc = await retry(() => this.opts.client.registerMachine(specs), this.#retryOpts('registering with FGLab'))
      if (!doc || !isObjectId(doc._id)) throw new Error(`FGLab's answer has no machine _id: ${JSON.stringify(doc).slice(0, 200)}`)
      await nodeDisk.writeAtomic(this.opts.specsFile, JSON.stringify(doc, null, 2) + '\n')
      this.#machineId = doc._id
      this.opts.log.info({ machineId: doc._id, specsFile: this.opts.specsFile }, 'registered with FGLab')
      return doc._id
    } catch (err) {
      if (!this.#stop.signal.aborted) this.opts.log.error({ err: (err as Error).message }, 'registration with FGLab failed for good')
      throw err
    }
  }

  async #sendProjects(): Promise<void> {
    let machineId: string
    try {
      machineId = await this.#registered!
    } catch {
      return
    }
    while (this.#projectsDirty && !this.#stop.signal.aborted) {
      this.#projectsDirty = false
      const projects = this.#projects!
      try {
        await retry(() => this.opts.client.updateProjects(machineId, projects), this.#retryOpts('sending projects to FGLab'))
        this.opts.log.info({ projects: Object.keys(projects) }, 'projects sent to FGLab')
      } catch (err) {
        if (this.#stop.signal.aborted) return
        const status = (err as { status?: number }).status
        this.opts.log.error(
          { err: (err as Error).message, machineId },
          status === 404
            ? `FGLab does not know machine ${machineId}: if it was deleted in FGLab, delete ${this.opts.specsFile} and restart to register again`
            : 'FGLab refused the projects',
        )
      }
    }
  }
}

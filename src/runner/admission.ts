import type { FastifyBaseLogger } from 'fastify'
import type { ProjectStore } from '../projects/store.js'
import type { Refusal } from '../scheduler/refusal.js'
import type { Scheduler } from '../scheduler/scheduler.js'
import { realClock, type Clock } from '../util/clock.js'
import { NoCapacityError } from './errors.js'
import type { ExperimentManager } from './experiment-manager.js'

/** The same refusal (cause and project) is logged at most this often. */
const LOG_EVERY_MS = 5 * 60_000
/** At most this many refusals are remembered for that. */
const MAX_REMEMBERED = 1000

export interface AdmissionDeps {
  projects: Pick<ProjectStore, 'get' | 'problems' | 'file'>
  scheduler: Pick<Scheduler, 'capacity' | 'refusal'>
  experiments: Pick<ExperimentManager, 'start' | 'refusal'>
  log: Pick<FastifyBaseLogger, 'info' | 'warn'>
  clock?: Clock
}

/**
 * FGLab's two questions, "how many can you take?" and "take this one": each
 * answered, or refused with the cause and what to do about it. FGLab itself
 * shows every refusal as "No machine capacity available"; the reason is in
 * the answer and in this machine's log (each cause once in a while).
 */
export class Admission {
  #logged = new Map<string, number>()
  readonly #clock: Clock

  constructor(private readonly deps: AdmissionDeps) {
    this.#clock = deps.clock ?? realClock
  }

  /** How many more experiments of the project could start now (more than 0), else NoCapacityError. */
  capacity(projectId: string): number {
    const project = this.deps.projects.get(projectId)
    const refused = this.#refusal(projectId) ?? (project && this.deps.scheduler.capacity(project) <= 0 ? this.deps.scheduler.refusal(project) : undefined)
    if (refused) throw this.#refuse(projectId, refused)
    return this.deps.scheduler.capacity(project!)
  }

  /** Start one experiment (see ExperimentManager.start), or NoCapacityError with why not. */
  async start(projectId: string, body: Record<string, unknown>): Promise<void> {
    const refused = this.#refusal(projectId)
    if (refused) throw this.#refuse(projectId, refused)
    try {
      await this.deps.experiments.start(projectId, body, this.deps.projects.get(projectId))
    } catch (err) {
      if (err instanceof NoCapacityError) throw this.#refuse(projectId, err.refusal)
      throw err
    }
  }

  /** A refusal that does not depend on what runs: the project's entry, or the machine's state. */
  #refusal(projectId: string): Refusal | undefined {
    if (!this.deps.projects.get(projectId)) {
      const problems = this.deps.projects.problems(projectId)
      if (problems) {
        const list = problems.map((p) => (p.field ? `${p.field}: ${p.message}` : p.message)).join('; ')
        return { cause: 'invalid_entry', reason: `project ${projectId}'s entry in ${this.deps.projects.file} is left out: ${list}` }
      }
      return {
        cause: 'unknown_project',
        reason: `project ${projectId} is not in ${this.deps.projects.file}: press "Add to Machine" on its FGLab page, then fill in the entry`,
      }
    }
    return this.deps.experiments.refusal()
  }

  /** Log the refusal (the first of its kind in a while) and make it the answer. */
  #refuse(projectId: string, refusal: Refusal): NoCapacityError {
    const key = `${refusal.cause} ${projectId}`
    const now = this.#clock.now()
    if ((this.#logged.get(key) ?? -Infinity) + LOG_EVERY_MS <= now) {
      // Ids come from anyone who can ask: what is remembered stays bounded (the oldest go first).
      this.#logged.delete(key)
      for (const k of this.#logged.keys()) {
        if (this.#logged.size < MAX_REMEMBERED) break
        this.#logged.delete(k)
      }
      this.#logged.set(key, now)
      // Ordinary: a busy machine, and (with several machines) FGLab asking about projects of
      // the others. Every other cause is something to fix here.
      const level = refusal.cause === 'full' || refusal.cause === 'unknown_project' ? 'info' : 'warn'
      this.deps.log[level]({ projectId, cause: refusal.cause, every: `${LOG_EVERY_MS / 60_000} min at most` }, `no capacity for FGLab: ${refusal.reason}`)
    }
    return new NoCapacityError(refusal)
  }
}

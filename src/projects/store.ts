import { EventEmitter } from 'node:events'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { watch, type FSWatcher } from 'chokidar'
import type { Logger } from 'pino'
import { parseProjects, projectTemplate, type Project, type ProjectProblem } from './schema.js'

/**
 * The watch reloads the file this long after the last event it saw: an
 * editor's save (truncate then write, or rename then write) is read once,
 * whole, not half-way.
 */
export const RELOAD_DEBOUNCE_MS = 300

/** A machine-specific rule for projects: the problem (field and why), or undefined when the project may run. */
export type ProjectCheck = (project: Project) => { field: string; message: string } | undefined

export class ProjectsFileError extends Error {
  override readonly name = 'ProjectsFileError'
  readonly code = 'FGM_PROJECTS_FILE'
}

/**
 * projects.json: loaded at start, watched, reloaded on change. A file that does
 * not parse keeps the last good configuration; so does a file emptied or
 * removed once one was loaded from it (a truncating save, an editor's
 * rename-then-write): "no projects" is said with `{}`. A bad entry is reported
 * and left out while the good ones run.
 *
 * Emits 'change' (raw object) after every successful reload.
 */
export class ProjectStore extends EventEmitter<{ change: [Record<string, unknown>] }> {
  #projects = new Map<string, Project>()
  #problems = new Map<string, ProjectProblem[]>()
  #raw: Record<string, unknown> = {}
  /** The text last applied. */
  #applied: string | undefined
  /** Whether a configuration was ever loaded: else there is no "last good" one to keep. */
  #loaded = false
  /** Why the last good configuration is kept, while it is (said once, not at each look). */
  #kept: string | undefined
  #watcher: FSWatcher | undefined
  #debounce: NodeJS.Timeout | undefined
  #writing = Promise.resolve()
  #checks: ProjectCheck[] = []

  constructor(
    readonly file: string,
    private readonly log: Logger,
    private readonly baseDir = process.cwd(),
    /** The entry "Add to Machine" writes; the seed's blank one when undefined. */
    private readonly template?: Record<string, unknown>,
    /** How long after the watch's last event the file is read (RELOAD_DEBOUNCE_MS; tests). */
    private readonly debounceMs = RELOAD_DEBOUNCE_MS,
  ) {
    super()
  }

  /**
   * Add a check that valid entries must also pass on this machine (e.g. a
   * results folder shared with sibling containers). Applies from the next reload.
   */
  addCheck(check: ProjectCheck): void {
    this.#checks.push(check)
  }

  get(id: string): Project | undefined {
    return this.#projects.get(id)
  }

  all(): Project[] {
    return [...this.#projects.values()]
  }

  /** Why the entry for `id` was left out, when it was. */
  problems(id: string): ProjectProblem[] | undefined {
    return this.#problems.get(id)
  }

  /** "keeping the last good configuration", or what happens when there never was one. */
  #keeping(): string {
    return this.#loaded ? 'keeping the last good configuration' : 'no project can run until it is fixed'
  }

  /** The file as last parsed, which is what FGLab is told. */
  raw(): Record<string, unknown> {
    return this.#raw
  }

  /**
   * Read the file now. Returns false (and keeps the last good state) when it
   * cannot be used. The same text as last applied is not applied (nor logged)
   * again, as when the watch sees "Add to Machine"'s own write, unless `force`
   * (the machine's checks changed).
   */
  async reload({ force = false } = {}): Promise<boolean> {
    let text: string
    try {
      text = await readFile(this.file, 'utf8')
      if (text === this.#applied && !force) {
        this.#kept = undefined
        return true
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        if (this.#applied !== undefined) return this.#keep('is gone (removed, or being replaced)', force)
        this.log.warn({ file: this.file }, 'no projects.json yet: no project can run until one is added ("Add to Machine" in FGLab creates it)')
        this.#applied = undefined
        this.#apply({})
        return true
      }
      this.log.error({ file: this.file, err }, `cannot read projects.json; ${this.#keeping()}`)
      return false
    }
    // Emptied (a truncating save caught half-way, `> projects.json`): not "no projects".
    if (text.trim() === '' && this.#applied !== undefined) return this.#keep('is empty', force)
    let raw: unknown
    try {
      raw = text.trim() === '' ? {} : (JSON.parse(text) as unknown)
    } catch (err) {
      this.log.error({ file: this.file, reason: (err as Error).message }, `projects.json is not valid JSON; ${this.#keeping()}`)
      return false
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      this.log.error({ file: this.file }, `projects.json must hold an object keyed by project id; ${this.#keeping()}`)
      return false
    }
    this.#apply(raw as Record<string, unknown>)
    this.#applied = text
    return true
  }

  /**
   * The file is missing or empty after a good one was loaded from it: keep
   * that configuration (FGLab is not told that the machine has no projects).
   */
  #keep(what: string, force: boolean): false {
    const said = this.#kept === what
    // The machine's checks changed: the kept configuration goes through them again.
    if (force) this.#apply(this.#raw)
    this.#kept = what
    if (!said) {
      this.log.warn(
        { file: this.file, projects: [...this.#projects.keys()] },
        `projects.json ${what}; keeping the last good configuration until it is written again (to run no projects, write {} to it)`,
      )
    }
    return false
  }

  #apply(raw: Record<string, unknown>): void {
    this.#kept = undefined
    const { projects, problems } = parseProjects(raw, this.baseDir)
    for (const [id, project] of projects) {
      for (const check of this.#checks) {
        const problem = check(project)
        if (!problem) continue
        problems.push({ projectId: id, ...problem })
        projects.delete(id)
        break
      }
    }
    for (const p of problems) {
      this.log.error({ projectId: p.projectId, field: p.field, reason: p.message }, `project ${p.projectId} left out: ${p.field ? p.field + ': ' : ''}${p.message}`)
    }
    this.#projects = projects
    this.#problems = new Map()
    for (const p of problems) this.#problems.set(p.projectId, [...(this.#problems.get(p.projectId) ?? []), p])
    this.#raw = raw
    this.#loaded = true
    this.log.info({ projects: [...projects.keys()], invalid: new Set(problems.map((p) => p.projectId)).size }, 'projects loaded')
    this.emit('change', raw)
  }

  /** Start watching the file (its folder, so that it may be created or replaced). */
  async watch(): Promise<void> {
    if (this.#watcher) return
    // Every event (each write of a save, a removal, a rename over it) puts the read off: the
    // file is read once the events stop, so an editor's save is one reload, of the whole file.
    this.#watcher = watch(this.file, { ignoreInitial: true })
    const onEvent = () => {
      clearTimeout(this.#debounce)
      this.#debounce = setTimeout(() => {
        this.#debounce = undefined
        void this.reload()
      }, this.debounceMs)
    }
    this.#watcher.on('add', onEvent).on('change', onEvent).on('unlink', onEvent)
    this.#watcher.on('error', (err) => this.log.error({ err }, 'projects.json watcher failed'))
    await new Promise<void>((resolve) => this.#watcher!.once('ready', () => resolve()))
  }

  async close(): Promise<void> {
    clearTimeout(this.#debounce)
    this.#debounce = undefined
    await this.#watcher?.close()
    this.#watcher = undefined
  }

  /**
   * Add the seed's template for a project id (FGLab's "Add to Machine").
   * Returns false if the id is already there. Refuses to touch a file that does not parse.
   */
  async addTemplate(projectId: string): Promise<boolean> {
    const run = this.#writing.then(() => this.#addTemplate(projectId))
    this.#writing = run.then(
      () => undefined,
      () => undefined,
    )
    return run
  }

  async #addTemplate(projectId: string): Promise<boolean> {
    let current: Record<string, unknown> = {}
    try {
      const text = await readFile(this.file, 'utf8')
      if (text.trim() !== '') current = JSON.parse(text) as Record<string, unknown>
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new ProjectsFileError(`projects.json cannot be updated: ${(err as Error).message}; fix the file first`)
      }
    }
    if (typeof current !== 'object' || current === null || Array.isArray(current)) {
      throw new ProjectsFileError('projects.json cannot be updated: it does not hold an object; fix the file first')
    }
    if (Object.hasOwn(current, projectId)) return false
    const next = { ...current, [projectId]: this.template ?? projectTemplate() }
    await mkdir(path.dirname(this.file), { recursive: true })
    const tmp = `${this.file}.${process.pid}.tmp`
    await writeFile(tmp, JSON.stringify(next, null, 2) + '\n')
    await rename(tmp, this.file)
    await this.reload()
    return true
  }
}

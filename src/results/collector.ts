import { watch, type Dirent, type FSWatcher } from 'node:fs'
import { chmod, lstat, mkdir, readdir, rm, rmdir } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import { signature } from './result-file.js'

export interface ResultsCollectorOptions {
  experimentId: string
  /** The experiment's own folder: `<results>/<id>`. */
  dir: string
  /** Called for each file (top level of `dir`) that is new or changed since it was last handed over. */
  onFile: (file: string) => void
  /** Whether FGLab already has this file in this form (sent before a restart). */
  sent?: (name: string, sig: string) => boolean
  log: Logger
  /** How long a file must see no change before the watch hands it over (ms). */
  stableMs?: number
}

/**
 * Watches one experiment's results folder. The folder is made and watched
 * *before* the program starts (the original watched for the folder to appear
 * and lost results written before its watcher was up), files already there
 * are looked at (a restart), and a final sweep after the exit hands over
 * whatever the watch has not yet seen. The watch is the kernel's (inotify):
 * one for the folder, and a file is looked at once it has been quiet for
 * `stableMs`, however many files are written at once.
 */
export class ResultsCollector {
  #watcher: FSWatcher | undefined
  /** What was last handed over, per file name: only a change is handed over again. */
  #handed = new Map<string, string>()
  /** Files with news, by name, in the order of their last news: when that was. */
  #touched = new Map<string, number>()
  #timer: NodeJS.Timeout | undefined
  #ticking: Promise<void> | undefined
  #stopped = false
  #held = false
  readonly #stableMs: number

  constructor(private readonly opts: ResultsCollectorOptions) {
    this.#stableMs = opts.stableMs ?? 200
  }

  get dir(): string {
    return this.opts.dir
  }

  /**
   * Make the folder (writable by any container user when `openToAll`), watch
   * it, and look at what is already there. Nothing is handed over until
   * `release()`: the experiment's start is reported first.
   */
  async start(openToAll = false): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true })
    if (openToAll) await chmod(this.opts.dir, 0o777)
    this.#stopped = false
    this.#held = true
    const watcher = watch(this.opts.dir, { persistent: false })
    this.#watcher = watcher
    watcher.on('change', (_event, name) => {
      if (name) this.#touch(String(name))
    })
    watcher.on('error', (err) => this.opts.log.warn({ experimentId: this.opts.experimentId, err: err.message }, 'results watch error; the final sweep will still collect everything'))
    for (const name of await readdir(this.opts.dir)) this.#touch(name)
  }

  /** Hand files over from now on (see start). */
  release(): void {
    this.#held = false
    if (this.#touched.size > 0 && !this.#timer && !this.#ticking && !this.#stopped) this.#schedule(this.#stableMs)
  }

  /** Stop watching (the experiment ended, or FGMachine shuts down and leaves it running). */
  async stop(): Promise<void> {
    this.#stopped = true
    this.#watcher?.close()
    this.#watcher = undefined
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#touched.clear()
    await this.#ticking
  }

  /** After the exit: stop watching and hand over every file not yet handed over in its current form. */
  async finalSweep(): Promise<void> {
    await this.stop()
    let names: string[]
    try {
      names = await readdir(this.opts.dir)
    } catch (err) {
      this.opts.log.warn({ experimentId: this.opts.experimentId, dir: this.opts.dir, err: (err as Error).message }, 'results folder cannot be read')
      return
    }
    for (const name of names.sort()) await this.#consider(name)
  }

  /**
   * After everything was sent: remove the regular files and links, then the
   * folder if nothing else is left in it. A subfolder or special file, never
   * uploaded, keeps the folder (logged). What a link points to is never touched.
   */
  async cleanup(): Promise<void> {
    let entries: Dirent[]
    try {
      entries = await readdir(this.opts.dir, { withFileTypes: true })
    } catch {
      return
    }
    const files = entries.filter((e) => e.isFile() || e.isSymbolicLink()).map((e) => path.join(this.opts.dir, e.name))
    // A few at a time: a folder of 20,000 files goes in a moment, without a flood of open requests.
    const next = async (): Promise<void> => {
      for (let file = files.pop(); file !== undefined; file = files.pop()) await rm(file, { force: true })
    }
    await Promise.all(Array.from({ length: 8 }, next))
    try {
      await rmdir(this.opts.dir)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOTEMPTY' || code === 'EEXIST') {
        this.opts.log.info({ experimentId: this.opts.experimentId, dir: this.opts.dir }, 'results folder kept: it holds things that are not uploaded (subfolders or special files)')
      } else if (code !== 'ENOENT') {
        this.opts.log.warn({ experimentId: this.opts.experimentId, dir: this.opts.dir, err: (err as Error).message }, 'results folder could not be removed')
      }
    }
  }

  #touch(name: string): void {
    if (this.#stopped) return
    this.#touched.delete(name)
    this.#touched.set(name, Date.now())
    if (!this.#timer && !this.#ticking && !this.#held) this.#schedule(this.#stableMs)
  }

  #schedule(ms: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#ticking = this.#tick()
        .catch((err: Error) => this.opts.log.error({ experimentId: this.opts.experimentId, err: err.message }, 'results watch failed; the final sweep will still collect everything'))
        .finally(() => {
        this.#ticking = undefined
        const next = this.#touched.values().next()
        if (!next.done && !this.#stopped) this.#schedule(Math.max(0, next.value + this.#stableMs - Date.now()))
      })
    }, ms)
    this.#timer.unref()
  }

  /** Hand over every file that has been quiet long enough (they are in the order of their last news). */
  async #tick(): Promise<void> {
    for (const [name, at] of this.#touched) {
      if (this.#stopped || at + this.#stableMs > Date.now()) return
      this.#touched.delete(name)
      await this.#consider(name)
    }
  }

  async #consider(name: string): Promise<void> {
    const file = path.join(this.opts.dir, name)
    let st
    try {
      st = await lstat(file)
    } catch {
      return
    }
    if (!st.isFile()) {
      if (!st.isDirectory()) this.opts.log.warn({ experimentId: this.opts.experimentId, file: name }, 'results entry is not a regular file (symlink, socket, FIFO or device); not uploaded')
      return
    }
    const sig = signature(st)
    if (this.#handed.get(name) === sig) return
    this.#handed.set(name, sig)
    if (this.opts.sent?.(name, sig)) return
    this.opts.onFile(file)
  }
}

import { lstat, mkdir, readdir, rm, rmdir, chmod } from 'node:fs/promises'
import path from 'node:path'
import { watch, type FSWatcher } from 'chokidar'
import type { Logger } from 'pino'

/** What was last handed over for sending, per file: re-send only what changed. */
type Signature = string

export interface ResultsCollectorOptions {
  experimentId: string
  /** The experiment's own folder: `<results>/<id>`. */
  dir: string
  /** Called for each file (top level of `dir`) that is new or changed since it was last handed over. */
  onFile: (file: string) => void
  log: Logger
  /** How long a file must stay unchanged before a watch event hands it over (ms). */
  stableMs?: number
}

/**
 * Watches one experiment's results folder. The folder is made and the watch
 * is ready *before* the program starts (the original watched for the folder to
 * appear and lost results written before its watcher was up), and a final
 * sweep after the exit hands over whatever the watch has not yet seen.
 */
export class ResultsCollector {
  #watcher: FSWatcher | undefined
  #sent = new Map<string, Signature>()
  readonly #log: Logger

  constructor(private readonly opts: ResultsCollectorOptions) {
    this.#log = opts.log
  }

  get dir(): string {
    return this.opts.dir
  }

  /** Make the folder (writable by any container user when `openToAll`) and start watching it. */
  async start(openToAll = false): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true })
    if (openToAll) await chmod(this.opts.dir, 0o777)
    const stableMs = this.opts.stableMs ?? 200
    const watcher = watch(this.opts.dir, {
      depth: 0,
      ignoreInitial: false,
      awaitWriteFinish: { stabilityThreshold: stableMs, pollInterval: Math.max(20, Math.floor(stableMs / 4)) },
    })
    this.#watcher = watcher
    const onEvent = (file: string) => {
      if (path.dirname(file) !== this.opts.dir) return
      void this.#consider(file)
    }
    watcher.on('add', onEvent).on('change', onEvent)
    watcher.on('error', (err) => this.#log.warn({ experimentId: this.opts.experimentId, err }, 'results watcher error; the final sweep will still collect everything'))
    await new Promise<void>((resolve) => watcher.once('ready', () => resolve()))
  }

  /** Stop watching (FGMachine shuts down; the experiment runs on). */
  async stop(): Promise<void> {
    await this.#watcher?.close()
    this.#watcher = undefined
  }

  /** After the exit: stop watching and hand over every file not yet handed over in its current form. */
  async finalSweep(): Promise<void> {
    await this.stop()
    let names: string[]
    try {
      names = await readdir(this.opts.dir)
    } catch (err) {
      this.#log.warn({ experimentId: this.opts.experimentId, dir: this.opts.dir, err: (err as Error).message }, 'results folder cannot be read')
      return
    }
    for (const name of names.sort()) await this.#consider(path.join(this.opts.dir, name))
  }

  /**
   * After everything was sent (the final sweep handed over every regular
   * file): remove those files, then the folder if nothing else is left in it.
   * A subfolder or special file, never uploaded, keeps the folder (logged).
   * Symlinks are removed as links; what they point to is never touched.
   */
  async cleanup(): Promise<void> {
    let names: string[]
    try {
      names = await readdir(this.opts.dir)
    } catch {
      return
    }
    for (const name of names) {
      const file = path.join(this.opts.dir, name)
      const st = await lstat(file).catch(() => undefined)
      if (st?.isFile() || st?.isSymbolicLink()) await rm(file, { force: true })
    }
    try {
      await rmdir(this.opts.dir)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOTEMPTY' || code === 'EEXIST') {
        this.#log.info({ experimentId: this.opts.experimentId, dir: this.opts.dir }, 'results folder kept: it holds things that are not uploaded (subfolders or special files)')
      } else if (code !== 'ENOENT') {
        this.#log.warn({ experimentId: this.opts.experimentId, dir: this.opts.dir, err: (err as Error).message }, 'results folder could not be removed')
      }
    }
  }

  async #consider(file: string): Promise<void> {
    let st
    try {
      st = await lstat(file)
    } catch {
      return
    }
    if (!st.isFile()) {
      if (!st.isDirectory()) this.#log.warn({ experimentId: this.opts.experimentId, file: path.basename(file) }, 'results entry is not a regular file (symlink, socket, FIFO or device); not uploaded')
      return
    }
    const sig = `${st.size}:${st.mtimeMs}:${st.ino}`
    if (this.#sent.get(file) === sig) return
    try {
      this.opts.onFile(file)
      // Only once it is handed over: a file that could not be queued is tried again by the final sweep.
      this.#sent.set(file, sig)
    } catch (err) {
      this.#log.error({ experimentId: this.opts.experimentId, file: path.basename(file), err: (err as Error).message }, 'cannot queue a results file for sending (disk full?)')
    }
  }

}

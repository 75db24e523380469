import { appendFile, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises'
import path from 'node:path'

/**
 * The one way FGMachine's own state (journal, ledgers, outbox) reaches the
 * disk. Every call is asynchronous (the thread pool does the work, never the
 * event loop), and tests can put a disk here that fails, or "crashes", at a
 * chosen write.
 */
export interface Disk {
  /**
   * Replace `file` with `data` so that a crash, or a power cut, leaves either
   * the old file or the new one, whole: a temporary file, flushed, renamed
   * over, and the rename flushed. Makes the folder when it is missing.
   */
  writeAtomic(file: string, data: string): Promise<void>
  /** Append to `file` (made if missing, with its folder); `sync` flushes it to the disk first. */
  append(file: string, data: string, sync: boolean): Promise<void>
  /** Remove a file; a missing one is no error. */
  remove(file: string): Promise<void>
  /** A file's text; undefined when it does not exist. */
  read(file: string): Promise<string | undefined>
  /** A folder's entries; none when it does not exist. */
  list(dir: string): Promise<string[]>
  /** Rename (to set an unreadable file aside). */
  rename(from: string, to: string): Promise<void>
}

const missing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT'

/** Flush a folder's entries (a rename or a new file in it) to the disk. */
async function syncFolder(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } catch (err) {
    // Some file systems cannot flush a folder (EINVAL): their renames are as durable as they get.
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err
  } finally {
    await fh.close()
  }
}

/** The real disk. */
export const nodeDisk: Disk = {
  async writeAtomic(file, data) {
    const dir = path.dirname(file)
    await mkdir(dir, { recursive: true })
    const tmp = `${file}.tmp`
    const fh = await open(tmp, 'w')
    try {
      // writeFile on a handle writes every byte (or throws, ENOSPC say) before the flush.
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, file)
    await syncFolder(dir)
  },

  async append(file, data, sync) {
    if (!sync) {
      try {
        await appendFile(file, data)
      } catch (err) {
        if (!missing(err)) throw err
        await mkdir(path.dirname(file), { recursive: true })
        await appendFile(file, data)
      }
      return
    }
    await mkdir(path.dirname(file), { recursive: true })
    const fh = await open(file, 'a')
    let created: boolean
    try {
      created = (await fh.stat()).size === 0
      await fh.writeFile(data)
      await fh.datasync()
    } finally {
      await fh.close()
    }
    // A new file's name is in its folder: flush that too.
    if (created) await syncFolder(path.dirname(file))
  },

  async remove(file) {
    await rm(file, { force: true })
  },

  async read(file) {
    try {
      return await readFile(file, 'utf8')
    } catch (err) {
      if (missing(err)) return undefined
      throw err
    }
  },

  async list(dir) {
    try {
      return await readdir(dir)
    } catch (err) {
      if (missing(err)) return []
      throw err
    }
  },

  async rename(from, to) {
    await rename(from, to)
  },
}

/** Why the data folder cannot take FGMachine's writes: it is full, or it may not be written. */
export type DiskTroubleCause = 'disk_full' | 'data_unwritable'

const TROUBLE: Record<string, DiskTroubleCause> = {
  ENOSPC: 'disk_full',
  EDQUOT: 'disk_full',
  EROFS: 'data_unwritable',
  EACCES: 'data_unwritable',
  EPERM: 'data_unwritable',
}

/** How often a data folder that refused a write is tried again while it does. */
export const DISK_PROBE_EVERY_MS = 5_000

export interface DiskHealthOptions {
  /** The data folder: where the probe is written, and what the reason names. */
  dir: string
  probeEveryMs?: number
  log?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void }
}

/**
 * Whether FGMachine's own state can be written, known without asking the
 * disk at each question: a write through `disk` that fails because the data
 * folder is full or not writable (ENOSPC, EDQUOT, EROFS, EACCES, EPERM) marks
 * it so, and from then on a tiny file is written every few seconds until one
 * succeeds. A whole file written (what a start needs: its record) clears it;
 * an append does not, as one can still fit in a full disk's last block.
 * Meanwhile `refusal()` says why no experiment is taken.
 */
export class DiskHealth {
  readonly disk: Disk
  #trouble: { cause: DiskTroubleCause; error: string } | undefined
  #timer: NodeJS.Timeout | undefined
  #probing: Promise<boolean> | undefined
  #closed = false
  readonly #probeFile: string
  readonly #probeEveryMs: number

  constructor(
    private readonly inner: Disk,
    private readonly opts: DiskHealthOptions,
  ) {
    this.#probeFile = path.join(opts.dir, '.write-probe')
    this.#probeEveryMs = opts.probeEveryMs ?? DISK_PROBE_EVERY_MS
    const watched =
      <A extends unknown[], R>(op: (...args: A) => Promise<R>, clears: boolean) =>
      (...args: A): Promise<R> =>
        op(...args).then(
          (r) => {
            if (clears) this.#healthy()
            return r
          },
          (err: unknown) => {
            this.#failed(err)
            throw err
          },
        )
    this.disk = {
      writeAtomic: watched((file: string, data: string) => inner.writeAtomic(file, data), true),
      append: watched((file: string, data: string, sync: boolean) => inner.append(file, data, sync), false),
      remove: watched((file: string) => inner.remove(file), false),
      rename: watched((from: string, to: string) => inner.rename(from, to), false),
      read: (file) => inner.read(file),
      list: (dir) => inner.list(dir),
    }
  }

  /** Why no experiment can be taken now because of the data folder, if so. */
  refusal(): { cause: DiskTroubleCause; reason: string } | undefined {
    const t = this.#trouble
    if (!t) return undefined
    const again = `experiments are taken again within ${Math.ceil(this.#probeEveryMs / 1000)} s of it taking writes`
    return t.cause === 'disk_full'
      ? { cause: t.cause, reason: `the data folder ${this.opts.dir} is full (${t.error}): experiments could not be written down; free space there (${again})` }
      : {
          cause: t.cause,
          reason: `the data folder ${this.opts.dir} cannot be written (${t.error}): experiments could not be written down; make it writable by FGMachine's user${typeof process.getuid === 'function' ? ` (uid ${process.getuid()})` : ''}, or mount it read-write (${again})`,
        }
  }

  /** Write (and remove) a tiny file in the data folder now: whether it took it. Clears or marks the trouble. */
  probe(): Promise<boolean> {
    this.#probing ??= this.disk
      .writeAtomic(this.#probeFile, `${Date.now()}\n`)
      .then(() => this.inner.remove(this.#probeFile))
      .then(
        () => true,
        () => false,
      )
      .finally(() => (this.#probing = undefined))
    return this.#probing
  }

  /** Stop probing (shutdown). */
  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
  }

  #failed(err: unknown): void {
    const code = (err as NodeJS.ErrnoException | undefined)?.code
    const cause = code ? TROUBLE[code] : undefined
    if (!cause) return
    const first = !this.#trouble
    this.#trouble = { cause, error: (err as Error).message }
    if (first) {
      this.opts.log?.warn({ dir: this.opts.dir, cause, err: (err as Error).message }, `${this.refusal()!.reason}; no experiment is taken meanwhile`)
    }
    this.#schedule()
  }

  #healthy(): void {
    if (!this.#trouble) return
    this.#trouble = undefined
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.opts.log?.info({ dir: this.opts.dir }, 'the data folder takes writes again: experiments are taken again')
  }

  #schedule(): void {
    if (this.#timer || this.#closed) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      void this.probe().then((ok) => {
        if (!ok) this.#schedule()
      })
    }, this.#probeEveryMs)
    this.#timer.unref()
  }
}

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

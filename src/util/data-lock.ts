import { randomUUID } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { mkdir, open, readFile, rename, stat, unlink, utimes } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

/** Who holds a data folder: enough to tell, from another process, whether it still runs. */
export interface LockHolder {
  pid: number
  host: string
  /** The kernel's boot id: a pid means the same process only within one boot... */
  bootId: string
  /** ...and one pid namespace (each container has its own). */
  pidNs: string
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat): tells a reused pid apart. */
  procStart: string
  /** This holding, unique: a lock taken over by another is not ours any more. */
  instance: string
  since: string
}

export class DataLockError extends Error {
  override readonly name = 'DataLockError'
  readonly code = 'FGM_DATA_LOCKED'
}

export interface DataLockOptions {
  /** The holder touches the lock this often (ms). */
  heartbeatMs?: number
  /** A holder in another pid namespace or boot whose lock has not been touched for this long is gone (ms). */
  staleMs?: number
  /** Told when the lock was taken from this process (it was stopped for longer than staleMs, say). */
  onLost?: (by: Partial<LockHolder> | undefined) => void
  /** For tests: what this process is. */
  self?: Partial<LockHolder>
}

const read = (file: string): string | undefined => {
  try {
    return readFileSync(file, 'utf8').trim()
  } catch {
    return undefined
  }
}

/** This process as a lock holder. */
export function currentHolder(): LockHolder {
  let pidNs = ''
  try {
    pidNs = readlinkSync('/proc/self/ns/pid')
  } catch {
    // not Linux: pids are checked as they are
  }
  return {
    pid: process.pid,
    host: os.hostname(),
    bootId: read('/proc/sys/kernel/random/boot_id') ?? '',
    pidNs,
    procStart: procStart(process.pid) ?? '',
    instance: randomUUID(),
    since: new Date().toISOString(),
  }
}

/** Field 22 of /proc/<pid>/stat (after the command, which may hold spaces and parentheses). */
function procStart(pid: number): string | undefined {
  const stat = read(`/proc/${pid}/stat`)
  if (!stat) return undefined
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
}

/** Whether a process of this pid namespace and boot is the holder, still running. */
function runsHere(h: Partial<LockHolder>): boolean {
  if (typeof h.pid !== 'number') return false
  try {
    process.kill(h.pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
  }
  // Alive, or not ours to signal: the same process only if it started when the holder did.
  return procStart(h.pid) === h.procStart
}

function describe(h: Partial<LockHolder> | undefined): string {
  if (!h?.pid) return 'a process whose lock file cannot be read'
  return `process ${h.pid} on ${h.host ?? 'an unknown host'}${h.since ? `, since ${h.since}` : ''}`
}

/**
 * One live FGMachine per data folder: `<data>/fgmachine.lock`, created
 * exclusively, touched every few seconds while held, removed at exit.
 *
 * A lock left by a process that is gone is taken over: at once when the
 * holder ran in this pid namespace and boot (its pid is no longer that
 * process), else once its lock has not been touched for `staleMs` (a
 * container of its own, another host). A takeover renames the old lock away
 * first, so of two processes taking over at once only one gets it.
 */
export class DataLock {
  #timer: NodeJS.Timeout | undefined
  #released = false

  private constructor(
    readonly file: string,
    readonly holder: LockHolder,
  ) {}

  static async acquire(dir: string, opts: DataLockOptions = {}): Promise<DataLock> {
    const heartbeatMs = opts.heartbeatMs ?? 2000
    const staleMs = opts.staleMs ?? 10_000
    const file = path.join(dir, 'fgmachine.lock')
    const me = { ...currentHolder(), ...opts.self }
    await mkdir(dir, { recursive: true })
    const deadline = Date.now() + staleMs + heartbeatMs
    for (;;) {
      if (await create(file, me)) break
      let holder: Partial<LockHolder> | undefined
      try {
        holder = JSON.parse(await readFile(file, 'utf8')) as Partial<LockHolder>
      } catch {
        holder = undefined // being written, or cut off by a crash: judged by its age
      }
      const local = holder !== undefined && holder.bootId === me.bootId && holder.pidNs === me.pidNs
      const age = await stat(file).then((s) => Date.now() - s.mtimeMs, () => undefined)
      if (age === undefined) continue // removed meanwhile: try again
      const gone = local ? !runsHere(holder!) : age > staleMs
      if (gone) {
        // Only one of several takers renames this very file away; the others find it gone.
        const aside = `${file}.stale-${me.instance}`
        if (await rename(file, aside).then(() => true, () => false)) await unlink(aside).catch(() => undefined)
        continue
      }
      // Alive, as far as can be told. Another namespace's holder is only known by its heartbeat: wait for one.
      if (local || Date.now() > deadline) {
        throw new DataLockError(
          `the data folder ${dir} is in use by another FGMachine (${describe(holder)}): ` +
            'only one may run on a data folder. Stop that one first, or give this one a data folder of its own (FGMACHINE_DATA_DIR)' +
            (local ? '' : `; if it is gone, this start takes over once ${file} is ${Math.round(staleMs / 1000)} s old`),
        )
      }
      await new Promise((r) => setTimeout(r, Math.min(heartbeatMs, 500)))
      const after = await stat(file).then((s) => Date.now() - s.mtimeMs, () => undefined)
      if (after !== undefined && after < age) {
        throw new DataLockError(
          `the data folder ${dir} is in use by another FGMachine (${describe(holder)}, which is still running: its lock was just touched): ` +
            'only one may run on a data folder. Stop that one first, or give this one a data folder of its own (FGMACHINE_DATA_DIR)',
        )
      }
    }
    const lock = new DataLock(file, me)
    lock.#timer = setInterval(() => void lock.#beat(opts.onLost), heartbeatMs)
    lock.#timer.unref()
    return lock
  }

  /** Touch the lock; if it is someone else's now, say so once and stop. */
  async #beat(onLost: DataLockOptions['onLost']): Promise<void> {
    let now: Partial<LockHolder> | undefined
    try {
      now = JSON.parse(await readFile(this.file, 'utf8')) as Partial<LockHolder>
    } catch {
      now = undefined
    }
    if (this.#released) return
    if (now?.instance !== this.holder.instance) {
      clearInterval(this.#timer)
      this.#released = true
      onLost?.(now)
      return
    }
    const t = new Date()
    await utimes(this.file, t, t).catch(() => undefined)
  }

  /** Let go: the lock file is removed if it is still this process's. */
  async release(): Promise<void> {
    if (this.#released) return
    this.#released = true
    clearInterval(this.#timer)
    try {
      const now = JSON.parse(await readFile(this.file, 'utf8')) as Partial<LockHolder>
      if (now.instance === this.holder.instance) await unlink(this.file)
    } catch {
      // gone already
    }
  }
}

/** Create the lock file with `holder` in it, if there is none. */
async function create(file: string, holder: LockHolder): Promise<boolean> {
  let fh
  try {
    fh = await open(file, 'wx')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw err
  }
  try {
    await fh.writeFile(JSON.stringify(holder) + '\n')
    await fh.sync()
  } finally {
    await fh.close()
  }
  return true
}

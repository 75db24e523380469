import { randomUUID } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { link, mkdir, open, readFile, rename, stat, unlink, utimes } from 'node:fs/promises'
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
  // Alive, or not ours to signal: the same process only if it started when the holder did
  // (where start times cannot be read, as outside Linux, the pid alone says it).
  const started = procStart(h.pid)
  return !started || !h.procStart || started === h.procStart
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
    for (;;) {
      if (await create(file, me)) break
      const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : ''))
      if (text === null) continue // removed meanwhile: try again
      let holder: Partial<LockHolder> | undefined
      try {
        holder = JSON.parse(text) as Partial<LockHolder>
      } catch {
        holder = undefined // being written, or cut off by a crash: judged by its heartbeat
      }
      const local = holder !== undefined && holder.bootId === me.bootId && holder.pidNs === me.pidNs
      const verdict = local ? (runsHere(holder!) ? 'alive' : 'gone') : await watchBeat(file, staleMs, heartbeatMs)
      if (verdict === 'again') continue
      if (verdict === 'alive') {
        throw new DataLockError(
          `the data folder ${dir} is in use by another FGMachine (${describe(holder)}${local ? '' : ', which is still running: its lock was touched while this one waited'}): ` +
            'only one may run on a data folder. Stop that one first, or give this one a data folder of its own (FGMACHINE_DATA_DIR)',
        )
      }
      // Taken over: renamed aside first, so that of several takers only one gets this very file;
      // one that renamed a newer lock (another taker's, made meanwhile) puts it back.
      const aside = `${file}.stale-${me.instance}`
      if (!(await rename(file, aside).then(() => true, () => false))) continue
      if ((await readFile(aside, 'utf8').catch(() => undefined)) !== text) await link(aside, file).catch(() => undefined)
      await unlink(aside).catch(() => undefined)
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
    } catch (err) {
      // Gone (the folder lost, say): made again. Unreadable for a moment: tried at the next beat.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !this.#released) await create(this.file, this.holder).catch(() => false)
      return
    }
    if (this.#released) return
    // Lost only to another holder, never to a read that failed.
    if (now.instance !== this.holder.instance) {
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

/**
 * A holder of another pid namespace or host is known by its heartbeat alone:
 * watched for up to `staleMs` (by whether its time changes, not against this
 * clock, which may differ from the file system's), unless it is far older.
 */
async function watchBeat(file: string, staleMs: number, heartbeatMs: number): Promise<'alive' | 'gone' | 'again'> {
  const first = await stat(file).catch(() => undefined)
  if (!first) return 'again'
  if (Date.now() - first.mtimeMs > 6 * staleMs) return 'gone'
  const until = Date.now() + staleMs + heartbeatMs
  while (Date.now() < until) {
    await new Promise((r) => setTimeout(r, Math.min(heartbeatMs, 500)))
    const now = await stat(file).catch(() => undefined)
    if (!now) return 'again'
    if (now.mtimeMs !== first.mtimeMs || now.ino !== first.ino) return 'alive'
  }
  return 'gone'
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
  } catch (err) {
    // Not left empty (every later start would find a lock it cannot read).
    await fh.close().catch(() => undefined)
    await unlink(file).catch(() => undefined)
    throw err
  }
  await fh.close()
  return true
}

/** The data folder takes no writes: FGMachine still starts (running experiments need it), unlocked. */
export function unwritable(err: unknown): boolean {
  return ['ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EPERM'].includes((err as NodeJS.ErrnoException).code ?? '')
}

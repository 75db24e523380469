import { createHash, randomUUID } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { mkdir, open, readdir, readFile, stat, unlink, utimes } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { procStatFields } from './proc.js'

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
  return procStatFields(stat)?.[19]
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
 * container of its own, another host). Of several processes taking over at
 * once, only one gets it (see takeOver).
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
      const seen = await look(file)
      if (!seen) continue // removed meanwhile: try again
      const holder = parse(seen.text)
      const local = isLocal(holder, me)
      const verdict = local ? (runsHere(holder) ? 'alive' : 'gone') : await watchBeat(file, staleMs, heartbeatMs)
      if (verdict === 'again') continue
      if (verdict === 'alive') {
        throw new DataLockError(
          `the data folder ${dir} is in use by another FGMachine (${describe(holder)}${local ? '' : ', which is still running: its lock was touched while this one waited'}): ` +
            'only one may run on a data folder. Stop that one first, or give this one a data folder of its own (FGMACHINE_DATA_DIR)',
        )
      }
      await takeOver(file, seen, me, staleMs, heartbeatMs)
    }
    await sweepGuards(file, me)
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
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || this.#released) return
      const made = await create(this.file, this.holder).catch(() => false)
      // Released while it was made: not left behind.
      if (made && this.#released) await unlink(this.file).catch(() => undefined)
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

/** A lock file as read: its text, which file it was (a newer lock at the same path is another inode), its last touch. */
interface Seen {
  text: string
  ino: number
  mtimeMs: number
}

/** The lock file's text and inode, read from one open file; undefined when there is none. */
async function look(file: string): Promise<Seen | undefined> {
  let fh
  try {
    fh = await open(file, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    // Unreadable (permissions): judged by its heartbeat alone.
    const st = await stat(file).catch(() => undefined)
    return st && { text: '', ino: st.ino, mtimeMs: st.mtimeMs }
  }
  try {
    const [st, text] = await Promise.all([fh.stat(), fh.readFile('utf8')])
    return { text, ino: st.ino, mtimeMs: st.mtimeMs }
  } finally {
    await fh.close()
  }
}

function parse(text: string): Partial<LockHolder> | undefined {
  try {
    return JSON.parse(text) as Partial<LockHolder>
  } catch {
    return undefined // being written, or cut off by a crash: judged by its heartbeat
  }
}

/**
 * Of this pid namespace and boot, where its pid says whether it runs. Where
 * neither can be read (outside Linux), of this host.
 */
const isLocal = (h: Partial<LockHolder> | undefined, me: LockHolder): h is Partial<LockHolder> =>
  h !== undefined && h.bootId === me.bootId && h.pidNs === me.pidNs && (me.bootId !== '' || h.host === me.host)

/** Written by a process of this pid namespace and boot that is gone. */
const diedHere = (seen: Seen, me: LockHolder): boolean => {
  const holder = parse(seen.text)
  return isLocal(holder, me) && !runsHere(holder)
}

/** The same file, untouched since (a holder judged gone that touches its lock again is not gone). */
const sameFile = (a: Seen | undefined, b: Seen): boolean => a !== undefined && a.ino === b.ino && a.text === b.text && a.mtimeMs === b.mtimeMs

/**
 * Remove a lock judged gone: that very file, never a newer one. Takers remove
 * it one at a time, each holding a guard made exclusively and held for
 * milliseconds, and only if it is still the file they judged (same inode and
 * text, not touched since). Nothing else puts a new lock in its place
 * meanwhile: a lock is only ever made where there is none.
 *
 * The guard is named after the lock it removes (`<lock>.takeover-<key>-<n>`),
 * and a guard whose taker died (or hangs for staleMs) is never removed or
 * renamed by another taker, only passed over for the next generation: taking a
 * guard from under a taker is what lets two takers hold it. Once the lock is
 * removed it never comes back, so the guards of its dead takers are removed too.
 */
async function takeOver(file: string, seen: Seen, me: LockHolder, staleMs: number, heartbeatMs: number): Promise<void> {
  const guard = (gen: number): string => guardName(file, seen, gen)
  for (let gen = 0; ; gen++) {
    if (await create(guard(gen), me)) {
      try {
        if (sameFile(await look(file), seen)) await unlink(file).catch(unlessGone)
        for (let g = 0; g < gen; g++) await unlink(guard(g)).catch(unlessGone)
      } finally {
        await unlink(guard(gen)).catch(unlessGone)
      }
      return
    }
    const held = await look(guard(gen))
    if (!held) return // done meanwhile: the lock is judged again
    if (diedHere(held, me)) continue
    // Another taker is at it: once it is done (its guard gone or another), the lock is judged again.
    if ((await watchBeat(guard(gen), staleMs, heartbeatMs, 10)) !== 'gone') return
  }
}

const GUARD = '.takeover-'

const guardName = (file: string, seen: Seen, gen: number): string =>
  `${file}${GUARD}${createHash('sha256').update(`${seen.ino}\n${seen.mtimeMs}\n${seen.text}`).digest('hex').slice(0, 16)}-${gen}`

/** For tests: the name of a takeover guard of the lock file as it is now. */
export async function takeoverGuard(file: string, gen = 0): Promise<string> {
  const seen = await look(file)
  if (!seen) throw new Error(`no lock file at ${file}`)
  return guardName(file, seen, gen)
}

/** Guards left by takers of this pid namespace that died: removed once the lock is held. */
async function sweepGuards(file: string, me: LockHolder): Promise<void> {
  const names = await readdir(path.dirname(file)).catch(() => [] as string[])
  for (const name of names) {
    if (!name.startsWith(path.basename(file) + GUARD)) continue
    const guard = path.join(path.dirname(file), name)
    const held = await look(guard).catch(() => undefined)
    if (held && diedHere(held, me)) await unlink(guard).catch(() => undefined)
  }
}

const unlessGone = (err: NodeJS.ErrnoException): void => {
  if (err.code !== 'ENOENT') throw err
}

/**
 * A holder of another pid namespace or host is known by its heartbeat alone
 * (and a takeover guard, which has none, by whether it stays): watched for up to `staleMs` (by whether its time changes, not against this
 * clock: another host's may be behind). A lock that looks far older by this
 * clock needs only two heartbeats without a touch.
 */
async function watchBeat(file: string, staleMs: number, heartbeatMs: number, pollMs = Math.min(heartbeatMs, 500)): Promise<'alive' | 'gone' | 'again'> {
  const first = await stat(file).catch(() => undefined)
  if (!first) return 'again'
  const old = Date.now() - first.mtimeMs > 6 * staleMs
  const until = Date.now() + (old ? 2 * heartbeatMs : staleMs + heartbeatMs)
  while (Date.now() < until) {
    await new Promise((r) => setTimeout(r, pollMs))
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

import path from 'node:path'
import type { Logger } from 'pino'
import { AppendLog } from '../util/append-log.js'
import type { Disk } from '../util/disk.js'
import { realSleep } from '../util/retry.js'

export interface DurableQueueOptions<T> {
  /** One log file per key here: `<dir>/<key>.jsonl`. */
  dir: string
  disk: Disk
  log: Logger
  /**
   * Handle one item to its end (sent, given up: the caller's business). It
   * rejects only when `signal` aborts (the queue closes): the item then stays
   * queued. Any other rejection is a fault: logged, and tried again later.
   */
  process: (key: string, value: T, signal: AbortSignal) => Promise<void>
  /** Keys a log file name may hold (others are ignored at restore). */
  validKey: (key: string) => boolean
  /** Past this many bytes of queued items the queue is `full()` until half is gone. */
  maxBytes: number
  /** How many keys are worked on at once. */
  concurrency?: number
  /** Wait after a fault in `process` before the item is tried again (ms). */
  faultRetryMs?: number
}

interface Entry<T> {
  seq: number
  value: T
  coalesce?: string
  bytes: number
}

interface KeyState<T> {
  items: Entry<T>[]
  head: number
  /** Queued (not in flight) items by coalescing name: one of each is enough. */
  byName: Map<string, Entry<T>>
  busy: boolean
  waiters: Array<(allDone: boolean) => void>
  log: AppendLog
  /** Lines in the log file: compacted when far more than what is queued. */
  lines: number
}

type Line<T> = { p: number; v: T; c?: string } | { d: number }

/**
 * A durable, ordered, bounded queue of work per key. Items of one key are
 * handled one at a time, in order; keys are served in turn, a few at once.
 * `enqueue` is O(1) and never touches the disk on the event loop: each key's
 * items go to an append-only log (written and flushed in batches), and a
 * done item is marked there; a key's log goes when its last item is done.
 * After a crash, `restore` queues again whatever was not marked done.
 */
export class DurableQueue<T> {
  #keys = new Map<string, KeyState<T>>()
  #ready = new Set<string>()
  #active = 0
  #seq = 0
  #pending = 0
  #bytes = 0
  #full = false
  #warnedAt = 0
  #closed = new AbortController()
  #diskFailures = 0
  #diskSaidAt = 0
  readonly #concurrency: number

  constructor(private readonly opts: DurableQueueOptions<T>) {
    this.#concurrency = opts.concurrency ?? 16
  }

  /**
   * Queue `value` for `key`. With a `coalesce` name, an item of the same name
   * still waiting (not yet being handled) makes this one unneeded: false.
   */
  enqueue(key: string, value: T, coalesce?: string): boolean {
    const k = this.#key(key)
    if (coalesce !== undefined && k.byName.has(coalesce)) return false
    const seq = ++this.#seq
    const line: Line<T> = coalesce === undefined ? { p: seq, v: value } : { p: seq, v: value, c: coalesce }
    const entry: Entry<T> = { seq, value, coalesce, bytes: JSON.stringify(line).length }
    this.#write(key, k, line)
    this.#push(key, k, entry)
    return true
  }

  /** Queue again what the logs hold from before a restart; returns the keys that had items. */
  async restore(): Promise<string[]> {
    const keys: string[] = []
    for (const name of await this.opts.disk.list(this.opts.dir)) {
      const key = name.endsWith('.jsonl') ? name.slice(0, -'.jsonl'.length) : ''
      if (!this.opts.validKey(key) || this.#keys.has(key)) continue
      const file = path.join(this.opts.dir, name)
      const { records, bad } = await AppendLog.read(this.opts.disk, file)
      if (bad) this.opts.log.warn({ key, file, lines: bad }, 'unreadable lines in a queue log skipped (cut off by a crash?)')
      const open = new Map<number, Entry<T>>()
      for (const r of records as Array<Partial<{ p: number; v: T; c: string; d: number }>>) {
        if (typeof r.p === 'number' && 'v' in r) open.set(r.p, { seq: r.p, value: r.v as T, coalesce: r.c, bytes: JSON.stringify(r).length })
        else if (typeof r.d === 'number') open.delete(r.d)
      }
      const k = this.#key(key)
      const entries = [...open.values()].sort((a, b) => a.seq - b.seq)
      if (entries.length === 0) {
        this.#keys.delete(key)
        await k.log.remove()
        continue
      }
      keys.push(key)
      // Written again as just what is open: the log no longer carries what was done.
      k.lines = entries.length
      void k.log.rewrite(entries.map((e) => ({ p: e.seq, v: e.value, ...(e.coalesce === undefined ? {} : { c: e.coalesce }) }))).catch((err: Error) => this.#diskTrouble(key, err))
      for (const e of entries) {
        this.#seq = Math.max(this.#seq, e.seq)
        this.#push(key, k, e)
      }
    }
    return keys
  }

  /** Resolves true once every item queued so far for `key` is done, false if the queue closed first. */
  drain(key: string): Promise<boolean> {
    const k = this.#keys.get(key)
    if (!k || (k.head === k.items.length && !k.busy)) return Promise.resolve(true)
    if (this.#closed.signal.aborted) return Promise.resolve(false)
    return new Promise((resolve) => k.waiters.push(resolve))
  }

  /** Items not yet done, for one key or all. */
  pending(key?: string): number {
    if (key === undefined) return this.#pending
    const k = this.#keys.get(key)
    return k ? k.items.length - k.head : 0
  }

  /** Bytes of queued items (as logged). */
  bytes(): number {
    return this.#bytes
  }

  /** Too much is queued: the owner should take on no new work until it has gone down to half. */
  full(): boolean {
    return this.#full
  }

  /** Stop: items being handled are aborted and stay queued, as does everything else. */
  close(): void {
    this.#closed.abort()
    for (const k of this.#keys.values()) for (const w of k.waiters.splice(0)) w(false)
  }

  #key(key: string): KeyState<T> {
    let k = this.#keys.get(key)
    if (!k) {
      k = { items: [], head: 0, byName: new Map(), busy: false, waiters: [], log: new AppendLog(this.opts.disk, path.join(this.opts.dir, `${key}.jsonl`)), lines: 0 }
      this.#keys.set(key, k)
    }
    return k
  }

  #write(key: string, k: KeyState<T>, line: Line<T>): void {
    k.lines++
    // Batched and flushed: what a crash loses of the last moment is what its owner derives again anyway.
    k.log.append(line, 'p' in line).catch((err: Error) => this.#diskTrouble(key, err))
  }

  /** Said at most once a minute (a full disk fails every write), with how many failed since. */
  #diskTrouble(key: string, err: Error): void {
    this.#diskFailures++
    const now = Date.now()
    if (now - this.#diskSaidAt < 60_000) return
    this.#diskSaidAt = now
    this.opts.log.error({ key, err: err.message, failures: this.#diskFailures }, 'cannot write the report queue to disk (is it full?); the reports are still sent from memory')
    this.#diskFailures = 0
  }

  #push(key: string, k: KeyState<T>, e: Entry<T>): void {
    k.items.push(e)
    if (e.coalesce !== undefined) k.byName.set(e.coalesce, e)
    this.#pending++
    this.#account(e.bytes)
    if (this.#pending >= 100 && this.#pending >= this.#warnedAt * 10) {
      this.#warnedAt = this.#pending
      this.opts.log.warn({ pending: this.#pending, keys: this.#keys.size }, 'reports to FGLab are piling up: FGLab is slow or unreachable, or experiments write files faster than it takes them')
    }
    if (!k.busy) this.#ready.add(key)
    this.#pump()
  }

  #account(delta: number): void {
    this.#bytes += delta
    if (!this.#full && this.#bytes >= this.opts.maxBytes) {
      this.#full = true
      this.opts.log.error({ bytes: this.#bytes, maxBytes: this.opts.maxBytes, pending: this.#pending }, 'the outbox is full: no new experiments are taken until FGLab has taken enough of its reports')
    } else if (this.#full && this.#bytes < this.opts.maxBytes / 2) {
      this.#full = false
      this.opts.log.info({ bytes: this.#bytes }, 'the outbox has room again: new experiments are taken')
    }
  }

  #pump(): void {
    while (this.#active < this.#concurrency && this.#ready.size > 0 && !this.#closed.signal.aborted) {
      const key = this.#ready.values().next().value as string
      this.#ready.delete(key)
      this.#active++
      this.#work(key).catch((err: unknown) => this.opts.log.error({ key, err }, 'the report queue failed (a bug); its reports are sent after a restart'))
    }
  }

  /** Handle the first item of one key, then give the other keys their turn. */
  async #work(key: string): Promise<void> {
    const k = this.#keys.get(key)!
    const e = k.items[k.head]!
    k.busy = true
    if (e.coalesce !== undefined && k.byName.get(e.coalesce) === e) k.byName.delete(e.coalesce)
    let done = false
    try {
      await this.opts.process(key, e.value, this.#closed.signal)
      done = true
    } catch (err) {
      if (!this.#closed.signal.aborted) {
        this.opts.log.error({ key, err }, 'fault while handling a queued report; trying it again shortly')
        await realSleep(this.opts.faultRetryMs ?? 5000, this.#closed.signal).catch(() => undefined)
      }
    }
    k.busy = false
    this.#active--
    if (done) this.#done(key, k, e)
    else if (this.#closed.signal.aborted) {
      // Stays queued (and logged) for the next start.
      if (e.coalesce !== undefined && !k.byName.has(e.coalesce)) k.byName.set(e.coalesce, e)
    }
    if (this.#closed.signal.aborted) return
    if (k.head < k.items.length) this.#ready.add(key)
    this.#pump()
  }

  #done(key: string, k: KeyState<T>, e: Entry<T>): void {
    k.head++
    this.#pending--
    this.#account(-e.bytes)
    if (k.head > 1024 && k.head * 2 > k.items.length) {
      k.items = k.items.slice(k.head)
      k.head = 0
    }
    if (k.head === k.items.length) {
      // Everything of this key is done: its log goes (a later item starts it again, after the removal).
      k.items = []
      k.head = 0
      k.lines = 0
      const idle = () => k.items.length === 0 && !k.busy
      const waiters = k.waiters.splice(0)
      // Done means gone from the disk too: a crash from here on finds nothing of it to send again.
      void k.log
        .remove()
        .catch((err: Error) => this.#diskTrouble(key, err))
        .then(() => {
          if (idle() && this.#keys.get(key) === k) this.#keys.delete(key)
          for (const w of waiters) w(true)
        })
      if (this.#pending === 0 && this.#warnedAt > 0) {
        this.#warnedAt = 0
        this.opts.log.info('every report to FGLab is sent')
      }
      return
    }
    this.#write(key, k, { d: e.seq })
    const open = k.items.length - k.head
    if (k.lines > 4 * open + 1024) {
      k.lines = open
      const lines = k.items.slice(k.head).map((x) => ({ p: x.seq, v: x.value, ...(x.coalesce === undefined ? {} : { c: x.coalesce }) }))
      void k.log.rewrite(lines).catch((err: Error) => this.#diskTrouble(key, err))
    }
  }
}

import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import { mimeType } from '../results/mime.js'
import { backoffDelay, realSleep, type Backoff, type Sleep } from '../util/retry.js'
import { isRetryable, type FglabClient } from './client.js'
import type { OutboxStore } from './outbox-store.js'

/**
 * One report to FGLab. Plain data, written to disk as it is. Files are read
 * when sent, so a file rewritten before its turn goes out in its latest form.
 */
export type OutboxEntry =
  | { kind: 'started' }
  | { kind: 'update'; fields: Record<string, unknown> }
  | { kind: 'results-file'; path: string }
  | { kind: 'finished' }

interface Queued {
  seq: number
  entry: OutboxEntry
  /** Its size on disk (its JSON). */
  bytes: number
}

interface Queue {
  entries: Queued[]
  running: boolean
  /** Waiting for the queue to empty: told true when it did, false when the outbox closed first. */
  idle: Array<(allSent: boolean) => void>
}

export interface OutboxOptions {
  backoff?: Backoff
  sleep?: Sleep
  /** Where entries are kept until acknowledged; without it the outbox lives in memory only. */
  store?: OutboxStore
  /** Above this many bytes of unsent reports the outbox is full: no new experiments are taken (default 64 MiB). */
  maxBytes?: number
}

/**
 * Reports to FGLab, in order per experiment, each retried with backoff and
 * jitter until FGLab acknowledges it. With a store, each report is on disk
 * before it is sent and until it is acknowledged, and `restore()` sends what
 * a crash left. A report FGLab refuses for good (a 4xx other than the
 * passing and credential ones, see client.ts) is logged and dropped; a
 * refused results file also keeps its results folder from being deleted.
 * Experiments are sent independently of each other.
 *
 * Disk use is bounded by what there is to report: a results file waits in
 * the outbox once however often it is rewritten (as its path: it is read when
 * sent), and the other reports are a handful per experiment. And it is bounded
 * outright: past `maxBytes` the outbox is `full()`, and FGMachine takes no new
 * experiments until FGLab has taken enough (the running ones still report).
 * The log says when the backlog grows past each power of ten, when it is full,
 * and when it is empty again.
 */
export class Outbox {
  #queues = new Map<string, Queue>()
  /** Experiments with results files that could not be read (so were not sent): their folders must stay. */
  #unsent = new Set<string>()
  #closed = new AbortController()
  #seq = 0
  #pending = 0
  #warnedAt = 0
  #bytes = 0
  #full = false
  readonly #maxBytes: number
  readonly #backoff: Backoff
  readonly #sleep: Sleep
  readonly #store: OutboxStore | undefined

  constructor(
    private readonly client: FglabClient,
    private readonly log: Logger,
    opts: OutboxOptions = {},
  ) {
    this.#backoff = opts.backoff ?? { baseMs: 500, maxMs: 30_000 }
    this.#sleep = opts.sleep ?? realSleep
    this.#store = opts.store
    this.#maxBytes = opts.maxBytes ?? 64 * 1024 * 1024
  }

  /** Queue a report (on disk first, with a store). */
  enqueue(experimentId: string, entry: OutboxEntry): void {
    const q = this.#queue(experimentId)
    // A file already waiting for its turn will be read then: no need to queue it twice.
    if (
      entry.kind === 'results-file' &&
      q.entries.some((e, i) => e.entry.kind === 'results-file' && e.entry.path === entry.path && !(q.running && i === 0))
    ) {
      return
    }
    const seq = ++this.#seq
    const json = JSON.stringify(entry)
    this.#store?.append(experimentId, seq, json)
    this.#push(experimentId, q, { seq, entry, bytes: Buffer.byteLength(json) })
  }

  /** Too much is waiting for FGLab: take no new experiments until it has taken some. */
  full(): boolean {
    return this.#full
  }

  /** Bytes of reports waiting for FGLab. */
  bytes(): number {
    return this.#bytes
  }

  #account(delta: number): void {
    this.#bytes += delta
    if (!this.#full && this.#bytes >= this.#maxBytes) {
      this.#full = true
      this.log.error({ bytes: this.#bytes, maxBytes: this.#maxBytes, pending: this.#pending }, 'the outbox is full: no new experiments are taken until FGLab has taken enough of its reports')
    } else if (this.#full && this.#bytes < this.#maxBytes / 2) {
      this.#full = false
      this.log.info({ bytes: this.#bytes }, 'the outbox has room again: new experiments are taken')
    }
  }

  /** Send what the store holds from before a restart; returns the experiments it holds reports for. */
  restore(): string[] {
    if (!this.#store) return []
    const saved = this.#store.load()
    for (const [id, entries] of saved) {
      const q = this.#queue(id)
      for (const e of entries) {
        this.#seq = Math.max(this.#seq, e.seq)
        this.#push(id, q, e)
      }
    }
    const ids = [...saved.keys()]
    if (ids.length) this.log.info({ experiments: ids.length, reports: this.#pending }, 'resending reports left from before the restart')
    return ids
  }

  #queue(experimentId: string): Queue {
    let q = this.#queues.get(experimentId)
    if (!q) {
      q = { entries: [], running: false, idle: [] }
      this.#queues.set(experimentId, q)
    }
    return q
  }

  #push(experimentId: string, q: Queue, item: Queued): void {
    q.entries.push(item)
    this.#pending++
    this.#account(item.bytes)
    if (this.#pending >= 100 && this.#pending >= this.#warnedAt * 10) {
      this.#warnedAt = this.#pending
      this.log.warn({ pending: this.#pending, experiments: this.#queues.size }, 'reports to FGLab are piling up (is FGLab reachable?)')
    }
    if (!q.running) void this.#run(experimentId, q)
  }

  /**
   * Resolves true once every report queued so far for this experiment is
   * acknowledged (or refused for good), false if the outbox closed first.
   */
  drain(experimentId: string): Promise<boolean> {
    const q = this.#queues.get(experimentId)
    if (!q || (q.entries.length === 0 && !q.running)) return Promise.resolve(true)
    if (this.#closed.signal.aborted && !q.running) return Promise.resolve(false)
    return new Promise((resolve) => q.idle.push(resolve))
  }

  /** Whether some results file of this experiment could not be read or was refused, so was not sent; forgets the answer. */
  takeUnsent(experimentId: string): boolean {
    return this.#unsent.delete(experimentId)
  }

  pending(experimentId?: string): number {
    if (experimentId) return this.#queues.get(experimentId)?.entries.length ?? 0
    return this.#pending
  }

  /** Stop sending (on shutdown). Unsent reports stay unsent. */
  close(): void {
    this.#closed.abort()
    for (const q of this.#queues.values()) if (!q.running) for (const resolve of q.idle.splice(0)) resolve(false)
  }

  async #run(experimentId: string, q: Queue): Promise<void> {
    q.running = true
    try {
      while (q.entries.length > 0 && !this.#closed.signal.aborted) {
        const item = q.entries[0]!
        // Not delivered means the outbox closed: the entry stays unsent (and on disk).
        if (!(await this.#deliver(experimentId, item.entry))) break
        q.entries.shift()
        this.#pending--
        this.#account(-item.bytes)
        await this.#store?.remove(experimentId, item.seq).catch((err: Error) => this.log.warn({ experimentId, err: err.message }, 'cannot remove a sent report from disk; it may be sent again after a restart'))
        if (this.#pending === 0 && this.#warnedAt > 0) {
          this.#warnedAt = 0
          this.log.info('every report to FGLab is sent')
        }
      }
    } finally {
      q.running = false
      const allSent = q.entries.length === 0
      if (allSent) {
        this.#queues.delete(experimentId)
        try {
          this.#store?.removeExperiment(experimentId)
        } catch (err) {
          this.log.warn({ experimentId, err: (err as Error).message }, "cannot remove the experiment's outbox folder")
        }
      }
      for (const resolve of q.idle.splice(0)) resolve(allSent)
    }
  }

  /** Send one entry until FGLab acknowledges or refuses it for good (true), or the outbox closes (false). */
  async #deliver(experimentId: string, entry: OutboxEntry): Promise<boolean> {
    for (let attempt = 0; !this.#closed.signal.aborted; attempt++) {
      try {
        await this.#send(experimentId, entry)
        return true
      } catch (err) {
        const what = describe(entry)
        if (!isRetryable(err)) {
          if (entry.kind === 'results-file') {
            // FGLab does not have this file: the results folder is its only copy.
            this.#unsent.add(experimentId)
            this.log.error({ experimentId, report: what, err: (err as Error).message }, 'FGLab refused a results file; dropping the report, and the results folder is kept')
          } else {
            this.log.error({ experimentId, report: what, err: (err as Error).message }, 'FGLab refused a report; dropping it')
          }
          return true
        }
        const wait = backoffDelay(attempt, this.#backoff)
        this.log.warn({ experimentId, report: what, attempt: attempt + 1, retryInMs: wait, err: (err as Error).message }, 'report to FGLab failed; will retry')
        try {
          await this.#sleep(wait, this.#closed.signal)
        } catch {
          return false
        }
      }
    }
    return false
  }

  async #send(id: string, entry: OutboxEntry): Promise<void> {
    switch (entry.kind) {
      case 'started':
        await this.client.experimentStarted(id)
        return
      case 'finished':
        await this.client.experimentFinished(id)
        return
      case 'update':
        await this.client.updateExperiment(id, entry.fields)
        return
      case 'results-file':
        await this.#sendResultsFile(id, entry.path)
        return
    }
  }

  /**
   * Send one results file as it is now. It is opened without following a
   * symlink (an experiment may swap a file for a link to a host file between
   * the watch and the send), and read only through that open file.
   */
  async #sendResultsFile(id: string, file: string): Promise<void> {
    const name = path.basename(file)
    let fh: FileHandle
    try {
      fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') {
        this.log.warn({ experimentId: id, file }, 'results file disappeared before it could be sent')
        return
      }
      if (code === 'ELOOP') {
        this.log.warn({ experimentId: id, file: name }, 'results entry became a symlink; not sent')
        return
      }
      if (code === 'EMFILE' || code === 'ENFILE' || code === 'EAGAIN' || code === 'EINTR') {
        // Passing: too many files open right now. Try again with the backoff.
        throw new Error(`cannot open ${file} now (${code}); will try again`, { cause: err })
      }
      // For good (e.g. a file only its writer may read): say so, and keep the folder.
      this.#unsent.add(id)
      this.log.error({ experimentId: id, file: name, code }, 'cannot read a results file; it is not sent, and the results folder is kept')
      return
    }
    try {
      const st = await fh.stat()
      if (!st.isFile()) {
        this.log.warn({ experimentId: id, file: name }, 'results entry is not a regular file; not sent')
        return
      }
      if (name.toLowerCase().endsWith('.json') && st.size <= MAX_JSON_BYTES) {
        const fields = parseJsonFields(await fh.readFile('utf8'))
        if (fields.ok) {
          await this.client.updateExperiment(id, fields.value)
          this.log.debug({ experimentId: id, file: name, fields: Object.keys(fields.value) }, 'results fields sent')
          return
        }
        this.log.warn({ experimentId: id, file: name, reason: fields.reason }, 'results JSON file does not hold a JSON object; uploading it as a file instead')
      }
      // The open file itself (Linux's /proc/self/fd), streamed: never the path again.
      await this.client.uploadFiles(id, [{ path: `/proc/self/fd/${fh.fd}`, name, type: mimeType(name) }])
      this.log.debug({ experimentId: id, file: name, bytes: st.size }, 'results file uploaded')
    } finally {
      await fh.close()
    }
  }
}

/** A JSON results file larger than this is uploaded as a file, not parsed into fields. */
const MAX_JSON_BYTES = 16 * 1024 * 1024

function parseJsonFields(text: string): { ok: true; value: Record<string, unknown> } | { ok: false; reason: string } {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    return { ok: false, reason: (err as Error).message }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, reason: 'not an object' }
  // `_id` is FGLab's; it ignores it, and we do not send it.
  const fields = Object.fromEntries(Object.entries(value).filter(([k]) => k !== '_id' && k !== '__proto__'))
  return { ok: true, value: fields }
}

function describe(e: OutboxEntry): string {
  return e.kind === 'results-file' ? `file ${path.basename(e.path)}` : e.kind
}

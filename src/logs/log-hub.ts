import { Backlog } from './backlog.js'

export type Stream = 'stdout' | 'stderr'

export interface LogChunk {
  stream: Stream
  text: string
}

/** Someone watching an experiment's output (a browser's WebSocket). */
export interface LogSubscriber {
  /** Deliver one chunk; return false when the subscriber cannot keep up and should be dropped. */
  send(chunk: LogChunk): boolean
  /** Called when the subscriber is dropped for falling behind. */
  drop(reason: string): void
}

export interface LogHubOptions {
  /** Keep at least this many lines of backlog per experiment… */
  backlogLines?: number
  /** …or at least this many bytes, whichever holds more. */
  backlogBytes?: number
  /** Never more than this many bytes per experiment, whatever the line count. */
  backlogHardBytes?: number
  /** Never more than this many bytes for all running experiments together (each keeps at least 64 KiB). */
  liveBytes?: number
  /** How many ended experiments keep their backlog for late viewers… */
  keepEnded?: number
  /** …within this many bytes all together (each is first cut to `backlogBytes`). */
  keepEndedBytes?: number
}

interface Log {
  backlog: Backlog
  ended: boolean
  /** Ended and pushed out of the kept set: goes as soon as nobody watches. */
  expired: boolean
  subscribers: Set<LogSubscriber>
}

/** Each running experiment keeps at least this much however many run. */
const LIVE_FLOOR = 64 * 1024

/**
 * Per-experiment output: a bounded backlog of bytes for late subscribers, and
 * fan-out to live ones. Output is kept as bytes and decoded only for someone
 * watching, so a flood nobody watches costs a copy into the backlog and
 * nothing else. Publishing never waits for a subscriber; one that falls
 * behind is dropped rather than buffered without bound.
 */
export class LogHub {
  #logs = new Map<string, Log>()
  #ended: string[] = []
  #live = 0
  readonly #lines: number
  readonly #bytes: number
  readonly #hardBytes: number
  readonly #liveBytes: number
  readonly #keepEnded: number
  readonly #keepEndedBytes: number

  constructor(opts: LogHubOptions = {}) {
    this.#lines = opts.backlogLines ?? 10_000
    this.#bytes = opts.backlogBytes ?? 1024 * 1024
    this.#hardBytes = opts.backlogHardBytes ?? 4 * 1024 * 1024
    this.#liveBytes = opts.liveBytes ?? 32 * 1024 * 1024
    this.#keepEnded = opts.keepEnded ?? 50
    this.#keepEndedBytes = opts.keepEndedBytes ?? 16 * 1024 * 1024
  }

  /** Output of an experiment: bytes that end on a whole UTF-8 character (see Utf8Chunks), or text. */
  publish(experimentId: string, stream: Stream, data: Buffer | string): void {
    if (data.length === 0) return
    const log = this.#get(experimentId)
    const bytes = typeof data === 'string' ? Buffer.from(data) : data
    // Running experiments share `liveBytes`: each is held to its share, and never under the floor.
    const share = log.ended ? this.#bytes : Math.max(LIVE_FLOOR, Math.min(this.#hardBytes, Math.floor(this.#liveBytes / Math.max(1, this.#live))))
    log.backlog.append(stream, bytes, share)
    log.backlog.trim(this.#lines, this.#bytes, share)
    if (log.subscribers.size === 0) return
    const chunk = { stream, text: typeof data === 'string' ? data : data.toString('utf8') }
    for (const sub of log.subscribers) {
      if (!sub.send(chunk)) {
        log.subscribers.delete(sub)
        sub.drop('subscriber fell behind')
      }
    }
  }

  /** Send the backlog, then every new chunk, to `sub`. Returns the unsubscribe function. */
  subscribe(experimentId: string, sub: LogSubscriber): () => void {
    const log = this.#get(experimentId)
    for (const chunk of log.backlog.chunks()) {
      if (!sub.send(chunk)) {
        sub.drop('subscriber fell behind')
        this.#forgetIfUnused(experimentId, log)
        return () => {}
      }
    }
    log.subscribers.add(sub)
    return () => {
      log.subscribers.delete(sub)
      this.#forgetIfUnused(experimentId, log)
    }
  }

  /**
   * The experiment ended: keep its last `backlogBytes` a while for late
   * viewers, for the last `keepEnded` experiments within `keepEndedBytes`.
   */
  end(experimentId: string): void {
    const log = this.#logs.get(experimentId)
    if (!log || log.ended) return
    log.ended = true
    this.#live--
    log.backlog.trim(this.#lines, this.#bytes, this.#bytes)
    this.#ended.push(experimentId)
    let total = 0
    for (const id of this.#ended) total += this.#logs.get(id)?.backlog.bytes ?? 0
    while (this.#ended.length > this.#keepEnded || (this.#ended.length > 1 && total > this.#keepEndedBytes)) {
      const old = this.#ended.shift()!
      const l = this.#logs.get(old)
      if (l) {
        total -= l.backlog.bytes
        l.expired = true
        this.#forgetIfUnused(old, l)
      }
    }
  }

  /** Drop a backlog nobody needs: expired and unwatched, or never written to and unwatched. */
  #forgetIfUnused(id: string, log: Log): void {
    if (log.subscribers.size > 0 || this.#logs.get(id) !== log) return
    if (log.expired || (!log.ended && log.backlog.bytes === 0)) {
      this.#logs.delete(id)
      if (!log.ended) this.#live--
    }
  }

  backlog(experimentId: string): LogChunk[] {
    return [...(this.#logs.get(experimentId)?.backlog.chunks() ?? [])]
  }

  stats(experimentId: string): { lines: number; bytes: number; subscribers: number } | undefined {
    const l = this.#logs.get(experimentId)
    return l && { lines: l.backlog.lines, bytes: l.backlog.bytes, subscribers: l.subscribers.size }
  }

  /** Bytes held in every backlog together. */
  totalBytes(): number {
    let n = 0
    for (const l of this.#logs.values()) n += l.backlog.bytes
    return n
  }

  #get(id: string): Log {
    let log = this.#logs.get(id)
    if (!log) {
      log = { backlog: new Backlog(), ended: false, expired: false, subscribers: new Set() }
      this.#logs.set(id, log)
      this.#live++
    }
    return log
  }
}

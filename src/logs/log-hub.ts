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
  /** Never more than this many bytes, whatever the line count. */
  backlogHardBytes?: number
  /** How many ended experiments keep their backlog for late viewers… */
  keepEnded?: number
  /** …within this many bytes all together (each is first cut to `backlogBytes`). */
  keepEndedBytes?: number
}

/** Pieces of one unfinished line are merged into backlog entries of up to this many characters. */
const MERGE_CHARS = 16 * 1024
/** And never more entries than this (at least 10,000 lines' worth; output alternating between the streams defeats merging). */
const MAX_CHUNKS = 20_000

class Backlog {
  /** chunks[head..] is the backlog; the dead prefix is compacted now and then (shift() is O(n)). */
  chunks: LogChunk[] = []
  head = 0
  lines = 0
  bytes = 0
  ended = false
  /** Ended and pushed out of the kept set: goes as soon as nobody watches. */
  expired = false
  subscribers = new Set<LogSubscriber>()
}

function countLines(text: string): number {
  let n = 0
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++
  return n || 1
}

/**
 * Per-experiment output: a bounded backlog for late subscribers and fan-out to
 * live ones. Publishing never waits for a subscriber; one that falls behind is
 * dropped rather than buffered without bound.
 */
export class LogHub {
  #logs = new Map<string, Backlog>()
  #ended: string[] = []
  readonly #lines: number
  readonly #bytes: number
  readonly #hardBytes: number
  readonly #keepEnded: number
  readonly #keepEndedBytes: number

  constructor(opts: LogHubOptions = {}) {
    this.#lines = opts.backlogLines ?? 10_000
    this.#bytes = opts.backlogBytes ?? 1024 * 1024
    this.#hardBytes = opts.backlogHardBytes ?? 4 * 1024 * 1024
    this.#keepEnded = opts.keepEnded ?? 50
    this.#keepEndedBytes = opts.keepEndedBytes ?? 32 * 1024 * 1024
  }

  publish(experimentId: string, stream: Stream, text: string): void {
    if (text === '') return
    const log = this.#get(experimentId)
    const chunk = { stream, text }
    const last = log.chunks.length > log.head ? log.chunks[log.chunks.length - 1]! : undefined
    if (last && last.stream === stream && !last.text.endsWith('\n') && last.text.length + text.length <= MERGE_CHARS) {
      // A line written in many small pieces makes one backlog entry, not thousands of objects
      // (live viewers still get each piece as it comes).
      log.lines -= countLines(last.text)
      last.text += text
      log.lines += countLines(last.text)
    } else {
      log.chunks.push({ stream, text })
      log.lines += countLines(text)
    }
    log.bytes += Buffer.byteLength(text)
    this.#trim(log)
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
    for (let i = log.head; i < log.chunks.length; i++) {
      if (!sub.send(log.chunks[i]!)) {
        sub.drop('subscriber fell behind')
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
    this.#trim(log, this.#bytes)
    this.#ended.push(experimentId)
    let total = 0
    for (const id of this.#ended) total += this.#logs.get(id)?.bytes ?? 0
    while (this.#ended.length > this.#keepEnded || (this.#ended.length > 1 && total > this.#keepEndedBytes)) {
      const old = this.#ended.shift()!
      const l = this.#logs.get(old)
      if (l) {
        total -= l.bytes
        l.expired = true
        this.#forgetIfUnused(old, l)
      }
    }
  }

  /** Drop a backlog nobody needs: expired and unwatched, or never written to and unwatched. */
  #forgetIfUnused(id: string, log: Backlog): void {
    if (log.subscribers.size > 0 || this.#logs.get(id) !== log) return
    if (log.expired || (!log.ended && log.chunks.length === log.head)) this.#logs.delete(id)
  }

  backlog(experimentId: string): readonly LogChunk[] {
    const log = this.#logs.get(experimentId)
    return log ? log.chunks.slice(log.head) : []
  }

  stats(experimentId: string): { lines: number; bytes: number; subscribers: number } | undefined {
    const l = this.#logs.get(experimentId)
    return l && { lines: l.lines, bytes: l.bytes, subscribers: l.subscribers.size }
  }

  #get(id: string): Backlog {
    let log = this.#logs.get(id)
    if (!log) {
      log = new Backlog()
      this.#logs.set(id, log)
    }
    return log
  }

  /** Drop the oldest chunks while both soft bounds are exceeded, or the hard one is (`hardBytes`, normally the configured cap). */
  #trim(log: Backlog, hardBytes = this.#hardBytes): void {
    while (log.chunks.length - log.head > 1) {
      const over = (log.lines > this.#lines && log.bytes > this.#bytes) || log.bytes > hardBytes || log.chunks.length - log.head > MAX_CHUNKS
      if (!over) break
      const old = log.chunks[log.head]!
      log.head++
      log.lines -= countLines(old.text)
      log.bytes -= Buffer.byteLength(old.text)
    }
    if (log.head > 1024 && log.head * 2 > log.chunks.length) {
      log.chunks = log.chunks.slice(log.head)
      log.head = 0
    }
  }
}

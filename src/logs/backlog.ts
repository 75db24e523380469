import type { LogChunk, Stream } from './log-hub.js'

/** The ring starts this small and grows (doubling) up to the backlog's limit. */
const FIRST_RING = 64 * 1024
/** Pieces of one unfinished line are merged into segments of up to this many bytes. */
const MERGE = 16 * 1024
/** And never more segments than this (output alternating between the streams defeats merging). */
const MAX_SEGMENTS = 20_000

interface Segment {
  stream: Stream
  /** Where it starts, counted in bytes ever appended (see #index). */
  pos: number
  len: number
  lines: number
}

function newlines(b: Buffer): number {
  let n = 0
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++
  return n
}

/**
 * One experiment's recent output, as bytes in a ring buffer of its own: a
 * flood of any size is copied into the same memory over and over (nothing is
 * allocated per chunk, nothing waits for the garbage collector), in segments
 * of one stream, the oldest dropped first. Segments end on whole UTF-8
 * characters, so each decodes on its own when someone asks for the text.
 */
export class Backlog {
  #ring: Buffer = Buffer.alloc(0)
  /** The position (in bytes ever appended) that ring index 0 stood for when the ring was last laid out. */
  #origin = 0
  /** The position of the next byte. */
  #end = 0
  #segments: Segment[] = []
  #head = 0
  bytes = 0
  lines = 0

  /** Bytes of memory the ring takes. */
  get capacity(): number {
    return this.#ring.length
  }

  /** Append output, keeping at most `limit` bytes (older output goes first). */
  append(stream: Stream, data: Buffer, limit: number): void {
    const d = data.length > limit ? data.subarray(data.length - limit) : data
    const n = d.length
    if (n === 0) return
    while (this.bytes + n > limit) this.#dropOldest()
    this.#fit(limit, n)
    const at = this.#index(this.#end)
    const first = Math.min(n, this.#ring.length - at)
    d.copy(this.#ring, at, 0, first)
    if (first < n) d.copy(this.#ring, 0, first)
    const lines = newlines(d)
    const last = this.#segments.length > this.#head ? this.#segments[this.#segments.length - 1]! : undefined
    if (last && last.stream === stream && last.pos + last.len === this.#end && this.#byteAt(this.#end - 1) !== 10 && last.len + n <= MERGE) {
      // A line written in many small pieces makes one segment, not thousands of objects.
      last.len += n
      last.lines += lines
    } else {
      this.#segments.push({ stream, pos: this.#end, len: n, lines })
    }
    this.#end += n
    this.bytes += n
    this.lines += lines
  }

  /** Drop the oldest segments while both soft bounds (`lines`, `bytes`) are exceeded, or `hardBytes` is; then fit the ring to `hardBytes`. One segment is always kept. */
  trim(lines: number, bytes: number, hardBytes: number): void {
    while (this.#segments.length - this.#head > 1) {
      const over = (this.lines > lines && this.bytes > bytes) || this.bytes > hardBytes || this.#segments.length - this.#head > MAX_SEGMENTS
      if (!over) break
      this.#dropOldest()
    }
    if (this.#head > 1024 && this.#head * 2 > this.#segments.length) {
      this.#segments = this.#segments.slice(this.#head)
      this.#head = 0
    }
    // Memory follows the limit down too (more experiments running, or this one ended).
    if (this.#ring.length > 2 * Math.max(FIRST_RING, hardBytes, this.bytes)) this.#relayout(Math.max(FIRST_RING, hardBytes, this.bytes))
  }

  /** The backlog, oldest first, decoded. */
  *chunks(): Generator<LogChunk> {
    for (let i = this.#head; i < this.#segments.length; i++) {
      const s = this.#segments[i]!
      yield { stream: s.stream, text: this.#read(s.pos, s.len).toString('utf8') }
    }
  }

  #dropOldest(): void {
    const old = this.#segments[this.#head++]!
    this.bytes -= old.len
    this.lines -= old.lines
  }

  #index(pos: number): number {
    return (pos - this.#origin) % this.#ring.length
  }

  #byteAt(pos: number): number {
    return this.#ring[this.#index(pos)]!
  }

  /** Bytes from `pos`, as one Buffer (a copy only when they wrap around the ring's end). */
  #read(pos: number, len: number): Buffer {
    const at = this.#index(pos)
    if (at + len <= this.#ring.length) return this.#ring.subarray(at, at + len)
    return Buffer.concat([this.#ring.subarray(at), this.#ring.subarray(0, len - (this.#ring.length - at))])
  }

  /** Room for `n` more bytes: grow the ring (doubling, up to `limit`) when what it holds and `n` do not fit. */
  #fit(limit: number, n: number): void {
    if (this.bytes + n <= this.#ring.length) return
    let size = Math.max(FIRST_RING, this.#ring.length)
    while (size < this.bytes + n) size *= 2
    this.#relayout(Math.min(Math.max(limit, this.bytes + n), size))
  }

  /** A ring of `size` bytes holding what this one holds, the oldest byte at index 0. */
  #relayout(size: number): void {
    const ring = Buffer.allocUnsafeSlow(size)
    const start = this.#end - this.bytes
    if (this.bytes > 0) this.#read(start, this.bytes).copy(ring, 0)
    this.#ring = ring
    this.#origin = start
  }
}

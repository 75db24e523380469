import type { Readable } from 'node:stream'

export type StreamName = 'stdout' | 'stderr'

/**
 * Docker's multiplexed output (attach, logs without a TTY): frames of an
 * 8-byte header (stream type, 3 zero bytes, big-endian length) and that many
 * bytes. Each frame's bytes go to `onData` as they arrive, without copying
 * what does not need it (a frame split between two reads is joined), and the
 * raw stream is read only as fast as `onData` returns. Anything that is not a
 * frame header (a TTY container) is passed on as stdout from there on.
 * Resolves when the stream ends or fails.
 */
export async function demux(raw: Readable, onData: (stream: StreamName, data: Buffer) => void): Promise<void> {
  let header: Buffer = Buffer.alloc(0)
  let stream: StreamName | undefined
  let left = 0
  let plain = false
  try {
    for await (const chunk of raw) {
      let b = chunk as Buffer
      while (b.length > 0) {
        if (plain) {
          onData('stdout', b)
          break
        }
        if (left > 0) {
          const piece = b.subarray(0, left)
          left -= piece.length
          b = b.subarray(piece.length)
          onData(stream!, piece)
          continue
        }
        const need = 8 - header.length
        header = header.length === 0 && b.length >= 8 ? b.subarray(0, 8) : Buffer.concat([header, b.subarray(0, need)])
        b = b.subarray(Math.min(need, 8))
        if (header.length < 8) break
        const type = header[0]
        if (type !== 0 && type !== 1 && type !== 2) {
          plain = true
          const rest = Buffer.concat([header, b])
          header = Buffer.alloc(0)
          onData('stdout', rest)
          break
        }
        stream = type === 2 ? 'stderr' : 'stdout'
        left = header.readUInt32BE(4)
        header = Buffer.alloc(0)
      }
    }
  } catch {
    // The connection went (Docker restarting): the output ends here; the runtime looks again.
  }
}

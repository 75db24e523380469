import type { Readable } from 'node:stream'
import { Utf8Chunks } from '../logs/utf8-chunks.js'

/** Hand a byte stream on in pieces that end on whole UTF-8 characters; resolves at its end (or failure). */
export function pumpOutput(stream: Readable, onData: (data: Buffer) => void): Promise<void> {
  return new Promise((resolve) => {
    const chunks = new Utf8Chunks()
    let done = false
    const finish = () => {
      if (done) return
      done = true
      const rest = chunks.end()
      if (rest) onData(rest)
      resolve()
    }
    stream.on('data', (b: Buffer) => {
      const whole = chunks.push(b)
      if (whole) onData(whole)
    })
    stream.once('end', finish)
    stream.once('close', finish)
    stream.once('error', finish)
  })
}

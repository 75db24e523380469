import { StringDecoder } from 'node:string_decoder'
import type { Readable } from 'node:stream'

/** Decode a byte stream as UTF-8 text (never splitting a character) and hand each piece on; resolves at its end. */
export function pumpText(stream: Readable, onText: (text: string) => void): Promise<void> {
  return new Promise((resolve) => {
    const decoder = new StringDecoder('utf8')
    let done = false
    const finish = () => {
      if (done) return
      done = true
      onText(decoder.end())
      resolve()
    }
    stream.on('data', (b: Buffer) => onText(decoder.write(b)))
    stream.once('end', finish)
    stream.once('close', finish)
    stream.once('error', finish)
  })
}

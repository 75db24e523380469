import { randomBytes } from 'node:crypto'
import type { FileHandle } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { FILE_CHANGED, type StreamedBody } from '../fglab/client.js'

/** The error of a body whose file changed while it was read (FILE_CHANGED: the FGLab client says so, and it is sent again). */
function fileChanged(message: string): Error {
  return Object.assign(new Error(message), { code: FILE_CHANGED })
}

/** A field value in a Content-Disposition header, escaped as browsers (and undici's FormData) do. */
function quoted(name: string): string {
  return name.replace(/"/g, '%22').replace(/\r/g, '%0D').replace(/\n/g, '%0A')
}

/**
 * The multipart/form-data body FGLab takes (one file under `_files`). A
 * large file's bytes are streamed from the open file: read as the socket
 * takes them (backpressure), 64 KiB at a time, whatever the file's size.
 * Exactly `size` bytes are sent; a file that holds fewer by then (it was cut
 * while sent) fails the body, to be sent again.
 */
export async function multipartFile(fh: FileHandle, size: number, name: string, type: string): Promise<StreamedBody> {
  const boundary = `----fgmachine${randomBytes(12).toString('hex')}`
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="_files"; filename="${quoted(name)}"\r\nContent-Type: ${type}\r\n\r\n`)
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`)
  const contentType = `multipart/form-data; boundary=${boundary}`
  if (size <= SMALL_FILE_BYTES) {
    // A small file (most results files) is read at once: no stream machinery for a few bytes.
    const body = Buffer.allocUnsafe(head.length + size + tail.length)
    head.copy(body)
    const { bytesRead } = await fh.read(body, head.length, size, 0)
    if (bytesRead !== size) throw fileChanged(`${name} changed while it was read (${bytesRead} of ${size} bytes)`)
    tail.copy(body, head.length + size)
    return { body, length: body.length, contentType }
  }
  async function* parts(): AsyncGenerator<Buffer> {
    yield head
    let sent = 0
    if (size > 0) {
      for await (const chunk of fh.createReadStream({ start: 0, end: size - 1, autoClose: false, highWaterMark: 64 * 1024 })) {
        sent += (chunk as Buffer).length
        yield chunk as Buffer
      }
    }
    if (sent !== size) throw fileChanged(`${name} changed while it was sent (${sent} of ${size} bytes)`)
    yield tail
  }
  return { body: Readable.from(parts(), { objectMode: false }), length: head.length + size + tail.length, contentType }
}

/** Files up to this size are sent from one buffer, larger ones streamed. */
const SMALL_FILE_BYTES = 256 * 1024

import { Readable } from 'node:stream'
import t from 'tap'
import { demux } from '../../src/docker/demux.js'

function frame(type: number, text: string): Buffer {
  const body = Buffer.from(text)
  const head = Buffer.alloc(8)
  head[0] = type
  head.writeUInt32BE(body.length, 4)
  return Buffer.concat([head, body])
}

async function collect(chunks: Buffer[]) {
  const got: Record<string, string> = { stdout: '', stderr: '' }
  await demux(Readable.from(chunks), (stream, data) => (got[stream] += data.toString()))
  return got
}

t.test('frames are split by stream, however the reads cut them', async (t) => {
  const all = Buffer.concat([frame(1, 'out one\n'), frame(2, 'err one\n'), frame(1, 'out two\n'), frame(1, ''), frame(2, 'e'.repeat(70_000))])
  for (const size of [1, 3, 7, 8, 9, 64, 1024, all.length]) {
    const chunks: Buffer[] = []
    for (let i = 0; i < all.length; i += size) chunks.push(all.subarray(i, i + size))
    const got = await collect(chunks)
    t.equal(got.stdout, 'out one\nout two\n', `reads of ${size}: stdout`)
    t.equal(got.stderr, 'err one\n' + 'e'.repeat(70_000), `reads of ${size}: stderr`)
  }
})

t.test('a stream that is not framed (a TTY) is passed on as stdout', async (t) => {
  const got = await collect([Buffer.from('plain text, no header\n'), Buffer.from('more\n')])
  t.equal(got.stdout, 'plain text, no header\nmore\n')
})

t.test('a stream that fails ends the output, without an error', async (t) => {
  const failing = new Readable({ read() {} })
  const done = demux(failing, () => {})
  failing.push(frame(1, 'x'))
  failing.destroy(new Error('socket hang up'))
  await t.resolves(done)
})

import t from 'tap'
import { Backlog } from '../../src/logs/backlog.js'

/** A small deterministic random source. */
function rng(seed: number) {
  let s = seed
  return () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x80000000)
}

t.test('whatever is appended, the backlog is the newest whole segments, in order, each of its own stream, within the limit', async (t) => {
  for (const limit of [64 * 1024, 100_000, 1024 * 1024]) {
    const random = rng(limit)
    const b = new Backlog()
    let all = ''
    for (let i = 0; i < 3000; i++) {
      const stream = random() < 0.7 ? 'stdout' : 'stderr'
      const ch = stream === 'stdout' ? 'o' : 'é' // two bytes: segments must end on whole characters
      const len = Math.floor(random() * 3000) + 1
      const text = ch.repeat(len) + (random() < 0.5 ? '\n' : '')
      all += text
      b.append(stream, Buffer.from(text), limit)
      b.trim(10_000, 1024, limit)
    }
    const chunks = [...b.chunks()]
    const kept = chunks.map((c) => c.text).join('')
    t.ok(all.endsWith(kept), `limit ${limit}: what is kept is the newest output, whole and in order`)
    t.equal(Buffer.byteLength(kept), b.bytes)
    t.ok(b.bytes <= limit && b.bytes > limit / 2, `limit ${limit}: ${b.bytes} bytes kept`)
    t.ok(chunks.every((c) => !c.text.includes('\uFFFD') && [...c.text.replace(/\n/g, '')].every((x) => x === (c.stream === 'stdout' ? 'o' : 'é'))), 'each segment of one stream, decodable')
    t.equal(b.lines, kept.split('\n').length - 1, 'lines counted')
  }
})

t.test('pieces of one line merge into one segment; a new line starts a new one', async (t) => {
  const b = new Backlog()
  for (const piece of ['a', 'b', 'c\n', 'd']) b.append('stdout', Buffer.from(piece), 1 << 20)
  b.append('stderr', Buffer.from('e'), 1 << 20)
  t.same([...b.chunks()], [
    { stream: 'stdout', text: 'abc\n' },
    { stream: 'stdout', text: 'd' },
    { stream: 'stderr', text: 'e' },
  ])
})

t.test('a limit that shrinks (more experiments running) shrinks the memory too', async (t) => {
  const b = new Backlog()
  for (let i = 0; i < 100; i++) b.append('stdout', Buffer.alloc(40_000, 'x'), 4 << 20)
  t.ok(b.bytes > 3.5 * 2 ** 20)
  t.equal(b.capacity, 4 << 20, 'the ring grew to its limit, no further')
  b.trim(10, 10, 64 * 1024)
  t.ok(b.bytes <= 64 * 1024, 'trimmed to the new limit')
  t.ok(b.capacity <= 128 * 1024, `and its memory (${b.capacity} bytes)`)
  b.append('stdout', Buffer.from('more\n'), 64 * 1024)
  t.match([...b.chunks()].at(-1)?.text, 'more\n')
})

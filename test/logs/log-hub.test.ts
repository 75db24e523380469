import t from 'tap'
import { LogHub, type LogChunk, type LogSubscriber } from '../../src/logs/log-hub.js'

const A = '5f1e2d3c4b5a69788796a5b1'
const B = '5f1e2d3c4b5a69788796a5b2'

/** A subscriber that records what it gets; `accept` says how many sends it takes before it reports falling behind. */
function recorder(accept = Infinity) {
  const got: LogChunk[] = []
  const drops: string[] = []
  let sends = 0
  const sub: LogSubscriber = {
    send(chunk) {
      sends++
      if (sends > accept) return false
      got.push(chunk)
      return true
    },
    drop(reason) {
      drops.push(reason)
    },
  }
  return { sub, got, drops, sends: () => sends }
}

const texts = (chunks: readonly LogChunk[]) => chunks.map((c) => c.text)

t.test('a late subscriber gets the backlog, then live output, in order', async (t) => {
  const hub = new LogHub()
  hub.publish(A, 'stdout', 'one\n')
  hub.publish(A, 'stderr', 'two\n')
  hub.publish(B, 'stdout', 'other experiment\n')
  const r = recorder()
  hub.subscribe(A, r.sub)
  t.strictSame(r.got, [
    { stream: 'stdout', text: 'one\n' },
    { stream: 'stderr', text: 'two\n' },
  ])
  hub.publish(A, 'stdout', 'three\n')
  hub.publish(B, 'stdout', 'not for A\n')
  hub.publish(A, 'stderr', 'four\n')
  t.strictSame(texts(r.got), ['one\n', 'two\n', 'three\n', 'four\n'])
  t.strictSame(r.got.map((c) => c.stream), ['stdout', 'stderr', 'stdout', 'stderr'])
  t.strictSame(r.drops, [])
})

t.test('a subscriber before any output gets it live', async (t) => {
  const hub = new LogHub()
  const r = recorder()
  hub.subscribe(A, r.sub)
  t.strictSame(r.got, [])
  hub.publish(A, 'stdout', 'hello')
  t.strictSame(texts(r.got), ['hello'])
})

t.test('every subscriber gets every chunk; unsubscribe stops delivery', async (t) => {
  const hub = new LogHub()
  const r1 = recorder()
  const r2 = recorder()
  const off1 = hub.subscribe(A, r1.sub)
  hub.subscribe(A, r2.sub)
  t.equal(hub.stats(A)?.subscribers, 2)
  hub.publish(A, 'stdout', 'x')
  off1()
  t.equal(hub.stats(A)?.subscribers, 1)
  hub.publish(A, 'stdout', 'y')
  t.strictSame(texts(r1.got), ['x'])
  t.strictSame(texts(r2.got), ['x', 'y'])
})

t.test('empty text is not published', async (t) => {
  const hub = new LogHub()
  const r = recorder()
  hub.subscribe(A, r.sub)
  hub.publish(A, 'stdout', '')
  t.equal(r.sends(), 0)
  t.strictSame(hub.backlog(A), [])
})

t.test('publishing with no subscribers never throws', async (t) => {
  const hub = new LogHub()
  t.doesNotThrow(() => {
    for (let i = 0; i < 100; i++) hub.publish(A, i % 2 ? 'stderr' : 'stdout', `line ${i}\n`)
  })
  t.equal(hub.backlog(A).length, 100)
  t.strictSame(hub.stats(A), { lines: 100, bytes: hub.backlog(A).reduce((n, c) => n + c.text.length, 0), subscribers: 0 })
})

t.test('a subscriber that falls behind is dropped and no longer receives', async (t) => {
  const hub = new LogHub()
  const slow = recorder(2)
  const fast = recorder()
  hub.subscribe(A, slow.sub)
  hub.subscribe(A, fast.sub)
  for (const s of ['a', 'b', 'c', 'd', 'e']) hub.publish(A, 'stdout', s)
  t.strictSame(texts(slow.got), ['a', 'b'])
  t.equal(slow.drops.length, 1, 'drop is called once')
  t.equal(slow.sends(), 3, 'nothing is sent after the refused chunk')
  t.strictSame(texts(fast.got), ['a', 'b', 'c', 'd', 'e'], 'the others are unaffected')
  t.equal(hub.stats(A)?.subscribers, 1)
})

t.test('a subscriber that falls behind during the backlog is dropped', async (t) => {
  const hub = new LogHub()
  for (const s of ['a\n', 'b\n', 'c\n']) hub.publish(A, 'stdout', s)
  const slow = recorder(1)
  hub.subscribe(A, slow.sub)
  t.equal(slow.drops.length, 1)
  t.equal(hub.stats(A)?.subscribers, 0)
  hub.publish(A, 'stdout', 'd\n')
  t.equal(slow.sends(), 2, 'it gets nothing live')
})

t.test('backlog bounds', async (t) => {
  t.test('many short lines: kept while under 1 MiB', async (t) => {
    const hub = new LogHub()
    for (let i = 0; i < 20_000; i++) hub.publish(A, 'stdout', `${i}\n`)
    t.equal(hub.backlog(A).length, 20_000, 'more than 10,000 lines, but under 1 MiB: nothing trimmed')
    t.equal(hub.backlog(A)[0]?.text, '0\n')
  })

  t.test('long lines: kept while under 10,000 lines', async (t) => {
    const hub = new LogHub()
    const line = 'x'.repeat(1023) + '\n'
    for (let i = 0; i < 2500; i++) hub.publish(A, 'stdout', line)
    t.equal(hub.backlog(A).length, 2500, 'more than 1 MiB, but under 10,000 lines: nothing trimmed')
    t.equal(hub.stats(A)?.bytes, 2500 * 1024)
  })

  t.test('beyond both bounds the oldest are trimmed', async (t) => {
    const hub = new LogHub()
    const pad = 'y'.repeat(200)
    for (let i = 0; i < 12_000; i++) hub.publish(A, 'stdout', `${String(i).padStart(5, '0')}${pad}\n`)
    const kept = hub.backlog(A)
    // 10,000 lines of 206 bytes are still over 1 MiB, so the line bound is the one that holds.
    t.equal(kept.length, 10_000)
    t.equal(hub.stats(A)?.lines, 10_000)
    t.match(kept[0]?.text, /^02000/, 'the oldest went first')
    t.match(kept.at(-1)?.text, /^11999/, 'the newest is kept')
  })

  t.test('the hard cap holds whatever the line count', async (t) => {
    const hub = new LogHub()
    const chunk = 'z'.repeat(64 * 1024 - 1) + '\n'
    for (let i = 0; i < 100; i++) hub.publish(A, 'stdout', chunk)
    const bytes = hub.stats(A)!.bytes
    t.ok(bytes <= 4 * 1024 * 1024, `${bytes} bytes kept: at most 4 MiB`)
    t.ok(bytes > 4 * 1024 * 1024 - 64 * 1024, 'and no more is trimmed than needed')
    t.equal(bytes, hub.backlog(A).reduce((n, c) => n + Buffer.byteLength(c.text), 0), 'stats match the backlog')
  })

  t.test('bytes are counted in UTF-8', async (t) => {
    const hub = new LogHub({ backlogLines: 1, backlogBytes: 10 })
    hub.publish(A, 'stdout', 'ééééé\n') // 11 bytes, 6 characters
    hub.publish(A, 'stdout', 'a\n')
    t.equal(hub.stats(A)?.bytes, 2)
    t.strictSame(texts(hub.backlog(A)), ['a\n'])
  })

  t.test('the newest chunk is kept even when it alone is over the cap', async (t) => {
    const hub = new LogHub({ backlogLines: 1, backlogBytes: 1, backlogHardBytes: 8 })
    hub.publish(A, 'stdout', 'short\n')
    hub.publish(A, 'stdout', 'a chunk longer than eight bytes\n')
    t.strictSame(texts(hub.backlog(A)), ['a chunk longer than eight bytes\n'])
  })

  t.test('live subscribers get every chunk, trimmed or not', async (t) => {
    const hub = new LogHub({ backlogLines: 2, backlogBytes: 4, backlogHardBytes: 8 })
    const r = recorder()
    hub.subscribe(A, r.sub)
    for (let i = 0; i < 50; i++) hub.publish(A, 'stdout', `line ${i}\n`)
    t.equal(r.got.length, 50)
    t.ok(hub.backlog(A).length < 50)
  })
})

t.test('end() keeps the backlog of the last keepEnded experiments only', async (t) => {
  const hub = new LogHub({ keepEnded: 2 })
  const ids = ['e1', 'e2', 'e3', 'e4']
  for (const id of ids) hub.publish(id, 'stdout', `${id} output\n`)
  hub.end('e1')
  hub.end('e2')
  t.strictSame(texts(hub.backlog('e1')), ['e1 output\n'], 'still within keepEnded')
  hub.end('e3')
  t.strictSame(hub.backlog('e1'), [], 'the oldest ended one is forgotten')
  t.equal(hub.stats('e1'), undefined)
  t.strictSame(texts(hub.backlog('e2')), ['e2 output\n'])
  t.strictSame(texts(hub.backlog('e3')), ['e3 output\n'])
  t.strictSame(texts(hub.backlog('e4')), ['e4 output\n'], 'a running one is never forgotten')
  hub.end('e3')
  hub.end('e3')
  t.strictSame(texts(hub.backlog('e2')), ['e2 output\n'], 'ending twice counts once')
  hub.end('never-published')
  t.strictSame(texts(hub.backlog('e2')), ['e2 output\n'], 'ending an unknown experiment counts for nothing')
})

t.test('an ended backlog is cut to backlogBytes, and all ended ones together stay within keepEndedBytes', async (t) => {
  const hub = new LogHub({ backlogLines: 100, backlogBytes: 100, backlogHardBytes: 1000, keepEnded: 10, keepEndedBytes: 250 })
  const line = (id: string, n: number) => `${id} ${String(n).padStart(4, '0')} ${'.'.repeat(41)}\n` // 50 bytes
  for (const id of ['e1', 'e2', 'e3']) for (let n = 0; n < 10; n++) hub.publish(id, 'stdout', line(id, n))
  t.equal(hub.stats('e1')?.bytes, 500, 'while it runs, up to the hard cap is kept')
  hub.end('e1')
  t.strictSame(texts(hub.backlog('e1')), [line('e1', 8), line('e1', 9)], 'ended: its newest 100 bytes')
  hub.end('e2')
  t.equal(hub.stats('e1')?.bytes, 100, 'two ended, 200 bytes: both kept')
  hub.end('e3')
  t.equal(hub.stats('e1'), undefined, 'a third would make 300 bytes: the oldest goes')
  t.strictSame(texts(hub.backlog('e3')), [line('e3', 8), line('e3', 9)])
  t.strictSame(texts(hub.backlog('e2')), [line('e2', 8), line('e2', 9)])
})

t.test('an ended experiment being watched keeps its backlog', async (t) => {
  const hub = new LogHub({ keepEnded: 1 })
  hub.publish('e1', 'stdout', 'kept\n')
  const r = recorder()
  hub.subscribe('e1', r.sub)
  hub.end('e1')
  hub.publish('e2', 'stdout', 'x')
  hub.end('e2')
  t.strictSame(texts(hub.backlog('e1')), ['kept\n'])
})

t.test(
  'an ended experiment watched past its turn is forgotten once its viewer leaves',
  async (t) => {
    const hub = new LogHub({ keepEnded: 1 })
    hub.publish('e1', 'stdout', 'x')
    const off = hub.subscribe('e1', recorder().sub)
    hub.end('e1')
    hub.publish('e2', 'stdout', 'x')
    hub.end('e2')
    off()
    for (const id of ['e3', 'e4', 'e5']) {
      hub.publish(id, 'stdout', 'x')
      hub.end(id)
    }
    t.equal(hub.stats('e1'), undefined)
  },
)

t.test(
  'watching an experiment that never produces output leaves nothing behind',
  async (t) => {
    const hub = new LogHub()
    const off = hub.subscribe(A, recorder().sub)
    off()
    t.equal(hub.stats(A), undefined)
  },
)

t.test('a line written a byte at a time is one backlog entry; the number of entries is bounded', async (t) => {
  const hub = new LogHub()
  const r = recorder()
  hub.subscribe(A, r.sub)
  for (const ch of 'progress ..........\n') hub.publish(A, 'stdout', ch)
  t.strictSame(texts(hub.backlog(A)), ['progress ..........\n'], 'merged in the backlog')
  t.equal(r.got.length, 20, 'live viewers got every piece')
  const flood = new LogHub()
  for (let i = 0; i < 30_000; i++) flood.publish(A, i % 2 ? 'stdout' : 'stderr', 'x')
  t.equal(flood.backlog(A).length, 20_000, 'alternating streams cannot grow it past 20,000 entries')
})

t.test('output published as bytes is copied (the reader may reuse its buffer) and decoded only for viewers', async (t) => {
  const hub = new LogHub()
  const buf = Buffer.from('héllo wörld\n')
  hub.publish(A, 'stdout', buf)
  buf.fill(0x41)
  t.strictSame(texts(hub.backlog(A)), ['héllo wörld\n'], 'the backlog holds its own copy')
  t.equal(hub.stats(A)?.bytes, Buffer.byteLength('héllo wörld\n'), 'counted in bytes')
})

t.test('running experiments share one bound: each keeps its share (and at least 64 KiB), whatever floods', async (t) => {
  const hub = new LogHub({ backlogBytes: 1024, backlogHardBytes: 1024 * 1024, liveBytes: 2 * 1024 * 1024 })
  const ids = Array.from({ length: 8 }, (_, i) => `5f1e2d3c4b5a69788796a5${String(i).padStart(2, '0')}`)
  const line = Buffer.from('x'.repeat(1023) + '\n')
  for (let round = 0; round < 2000; round++) for (const id of ids) hub.publish(id, 'stdout', line)
  const total = hub.totalBytes()
  t.ok(total <= 2 * 1024 * 1024 + ids.length * 1024, `all together within the bound (${total} bytes)`)
  for (const id of ids) t.ok(hub.stats(id)!.bytes >= 256 * 1024 - 1024, `${id.slice(-2)} keeps its share (${hub.stats(id)!.bytes})`)
  // One floods alone: it may use its whole hard bound.
  const solo = new LogHub({ backlogBytes: 1024, backlogHardBytes: 1024 * 1024, liveBytes: 2 * 1024 * 1024 })
  for (let i = 0; i < 5000; i++) solo.publish(A, 'stdout', line)
  t.ok(solo.stats(A)!.bytes > 1000 * 1024 && solo.stats(A)!.bytes <= 1024 * 1024, 'a lone experiment gets its own hard bound')
})

t.test('a flood costs bounded memory: 200 MiB through one backlog leaves at most its bound', async (t) => {
  const hub = new LogHub()
  const chunk = Buffer.alloc(64 * 1024, 'y')
  chunk[chunk.length - 1] = 10
  for (let i = 0; i < 3200; i++) hub.publish(A, 'stdout', chunk)
  t.ok(hub.stats(A)!.bytes <= 4 * 1024 * 1024, `at most 4 MiB kept (${hub.stats(A)!.bytes})`)
  t.ok(hub.stats(A)!.bytes >= 1024 * 1024, 'and at least 1 MiB')
})

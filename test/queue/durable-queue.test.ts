import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { DurableQueue } from '../../src/queue/durable-queue.js'
import { nodeDisk, type Disk } from '../../src/util/disk.js'
import { objectId } from '../helpers/ids.js'
import { until } from '../helpers/until.js'

type Line = Record<string, unknown> & { msg: string; level: number }
type Item = { n: number; name?: string }

interface Rig {
  dir: string
  lines: Line[]
  /** What was handled, in order: `key:n`. */
  handled: string[]
  /** Hold handling until released (each `process` call waits on it). */
  gate: { open: boolean; wake: Array<() => void> }
  make(opts?: { maxBytes?: number; concurrency?: number; fail?: (key: string, v: Item) => boolean; disk?: Disk }): DurableQueue<Item>
}

/** The lines of a key's log on disk (none before it is made). */
const logged = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [])

function rig(t: Test): Rig {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-queue-'))
  const lines: Line[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) })
  const handled: string[] = []
  const gate = { open: true, wake: [] as Array<() => void> }
  const queues: Array<DurableQueue<Item>> = []
  t.teardown(() => {
    for (const q of queues) q.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return {
    dir,
    lines,
    handled,
    gate,
    make(opts = {}) {
      const q = new DurableQueue<Item>({
        dir,
        disk: opts.disk ?? nodeDisk,
        log,
        validKey: (k) => /^[0-9a-f]{24}$/.test(k),
        maxBytes: opts.maxBytes ?? 1 << 20,
        concurrency: opts.concurrency,
        faultRetryMs: 5,
        process: async (key, v, signal) => {
          while (!gate.open) {
            await new Promise<void>((resolve, reject) => {
              gate.wake.push(resolve)
              signal.addEventListener('abort', () => reject(signal.reason), { once: true })
            })
          }
          if (opts.fail?.(key, v)) throw new Error('a fault')
          handled.push(`${key.slice(-2)}:${v.n}`)
        },
      })
      queues.push(q)
      return q
    },
  }
}

const release = (r: Rig) => {
  r.gate.open = true
  for (const w of r.gate.wake.splice(0)) w()
}

t.test('items of one key are handled in order; keys independently', async (t) => {
  const r = rig(t)
  const q = r.make()
  const [a, b] = [objectId(), objectId()]
  for (let n = 0; n < 5; n++) {
    q.enqueue(a, { n })
    q.enqueue(b, { n })
  }
  t.equal(q.pending(), 10)
  t.equal(await q.drain(a), true)
  t.equal(await q.drain(b), true)
  const of = (k: string) => r.handled.filter((h) => h.startsWith(k.slice(-2))).map((h) => Number(h.split(':')[1]))
  t.same(of(a), [0, 1, 2, 3, 4])
  t.same(of(b), [0, 1, 2, 3, 4])
  t.ok(r.handled.indexOf(`${b.slice(-2)}:0`) < r.handled.indexOf(`${a.slice(-2)}:4`), 'keys take turns')
  t.equal(q.pending(), 0)
})

t.test('an item waiting under a name makes a second one of that name unneeded; one being handled does not', async (t) => {
  const r = rig(t)
  r.gate.open = false
  const q = r.make()
  const id = objectId()
  t.equal(q.enqueue(id, { n: 1, name: 'x' }, 'file:x'), true)
  await new Promise((res) => setTimeout(res, 10)) // n=1 is being handled now (held at the gate)
  t.equal(q.enqueue(id, { n: 2 }, 'file:x'), true, 'the first is in flight: this one is queued')
  t.equal(q.enqueue(id, { n: 3 }, 'file:x'), false, 'the second is waiting: this one is not needed')
  t.equal(q.pending(id), 2)
  release(r)
  await q.drain(id)
  t.same(r.handled.map((h) => h.split(':')[1]), ['1', '2'])
})

t.test('each item is logged before it is handled; the log goes once the key is done', async (t) => {
  const r = rig(t)
  r.gate.open = false
  const q = r.make()
  const id = objectId()
  q.enqueue(id, { n: 1 })
  q.enqueue(id, { n: 2 })
  const file = path.join(r.dir, `${id}.jsonl`)
  // Written in the background (batched, then flushed): on disk soon, while neither is done.
  await until(() => logged(file).length === 2, 'both items on disk')
  t.equal(r.handled.length, 0, 'neither is done yet')
  t.same(logged(file).map((l) => (JSON.parse(l) as Record<string, unknown>).p), [1, 2], 'both on disk, in order, before either is done')
  release(r)
  t.equal(await q.drain(id), true)
  t.notOk(existsSync(file), 'the log is removed when its key is done')
})

t.test('after a crash, a new queue over the same folder handles what was not done, in order', async (t) => {
  const r = rig(t)
  const id = objectId()
  const other = objectId()
  mkdirSync(r.dir, { recursive: true })
  // As a crash leaves it: 1 and 2 done, 3 and 4 not, the last line cut off.
  writeFileSync(path.join(r.dir, `${id}.jsonl`), ['{"p":1,"v":{"n":1}}', '{"p":2,"v":{"n":2}}', '{"d":1}', '{"p":3,"v":{"n":3}}', '{"d":2}', '{"p":4,"v":{"n":4},"c":"x"}', '{"p":5,"v'].join('\n'))
  writeFileSync(path.join(r.dir, `${other}.jsonl`), '{"p":9,"v":{"n":9}}\n{"d":9}\n')
  writeFileSync(path.join(r.dir, 'not-a-key.jsonl'), '{"p":1,"v":{"n":1}}\n')
  const q = r.make()
  r.gate.open = false
  t.same(await q.restore(), [id], 'only keys with open items')
  t.equal(q.pending(id), 2)
  t.equal(q.enqueue(id, { n: 5 }, 'x'), false, 'a restored item keeps its name')
  q.enqueue(id, { n: 6 })
  release(r)
  await q.drain(id)
  t.same(r.handled, [`${id.slice(-2)}:3`, `${id.slice(-2)}:4`, `${id.slice(-2)}:6`], 'new items come after the restored ones (their numbers go on)')
  t.ok(r.lines.some((l) => /unreadable lines in a queue log skipped/.test(l.msg) && l.lines === 1))
  t.notOk(existsSync(path.join(r.dir, `${other}.jsonl`)), 'a log with nothing open is removed')
  t.ok(existsSync(path.join(r.dir, 'not-a-key.jsonl')), 'a file that is not a key is left alone')
})

t.test('bounded: full at maxBytes, room again at half; items are still taken while full', async (t) => {
  const r = rig(t)
  r.gate.open = false
  const q = r.make({ maxBytes: 1000 })
  const id = objectId()
  let n = 0
  while (!q.full()) {
    q.enqueue(id, { n: n++ })
    t.ok(n < 200, 'it fills')
  }
  const bytes = q.bytes()
  t.ok(bytes >= 1000 && bytes < 1100, `full right at the bound (${bytes} bytes)`)
  t.ok(r.lines.some((l) => /the outbox is full/.test(l.msg)))
  t.equal(q.enqueue(id, { n: n++ }), true, 'a full queue still takes items: its owner takes no new work')
  release(r)
  await q.drain(id)
  t.equal(q.full(), false)
  t.equal(q.bytes(), 0)
  t.ok(r.lines.some((l) => /the outbox has room again/.test(l.msg)))
  t.equal(r.handled.length, n)
})

t.test('at most `concurrency` keys are handled at once', async (t) => {
  const r = rig(t)
  r.gate.open = false
  const q = r.make({ concurrency: 2 })
  const ids = Array.from({ length: 5 }, objectId)
  for (const id of ids) q.enqueue(id, { n: 0 })
  await new Promise((res) => setTimeout(res, 20))
  t.equal(r.gate.wake.length, 2, 'two in flight, three waiting their turn')
  release(r)
  await Promise.all(ids.map((id) => q.drain(id)))
  t.equal(r.handled.length, 5)
})

t.test('close(): the item in flight and the rest stay queued (and logged) for the next start', async (t) => {
  const r = rig(t)
  r.gate.open = false
  const q = r.make()
  const id = objectId()
  q.enqueue(id, { n: 1 })
  q.enqueue(id, { n: 2 })
  await until(() => logged(path.join(r.dir, `${id}.jsonl`)).length === 2, 'both items on disk')
  q.close()
  t.equal(await q.drain(id), false)
  t.equal(q.pending(id), 2)
  const again = r.make()
  r.gate.open = true
  t.same(await again.restore(), [id])
  await again.drain(id)
  t.same(r.handled.map((h) => h.split(':')[1]), ['1', '2'])
})

t.test('a fault while handling is logged and the item tried again', async (t) => {
  const r = rig(t)
  let faults = 0
  const q = r.make({ fail: () => faults++ < 2 })
  const id = objectId()
  q.enqueue(id, { n: 1 })
  await q.drain(id)
  t.equal(faults, 3)
  t.same(r.handled.length, 1)
  t.equal(r.lines.filter((l) => /fault while handling a queued report/.test(l.msg)).length, 2)
})

t.test('20,000 items of one key: each log line written once, the log compacted as it goes, all handled', async (t) => {
  const r = rig(t)
  const rewrites: number[] = []
  const appends = { lines: 0 }
  const disk: Disk = {
    ...nodeDisk,
    writeAtomic: (file, data) => {
      rewrites.push(data.split('\n').length - 1)
      return nodeDisk.writeAtomic(file, data)
    },
    append: (file, data, sync) => {
      appends.lines += data.split('\n').length - 1
      return nodeDisk.append(file, data, sync)
    },
  }
  const q = r.make({ disk })
  const id = objectId()
  for (let n = 0; n < 20_000; n++) q.enqueue(id, { n })
  t.equal(q.pending(id), 20_000)
  await q.drain(id)
  t.equal(r.handled.length, 20_000)
  t.equal(r.handled[19_999], `${id.slice(-2)}:19999`)
  t.same(readdirSync(r.dir), [], 'nothing left on disk')
  t.ok(appends.lines >= 20_000 && appends.lines < 40_000, `a put line each, and done lines (${appends.lines} lines appended)`)
  t.ok(rewrites.length >= 1 && rewrites[0]! < 20_000, `compacted when the done lines outweigh the open ones (to ${rewrites.join(', ')} lines)`)
  t.same(
    r.lines.filter((l) => /piling up/.test(l.msg)).map((l) => l.pending),
    [100, 1000, 10000],
    'the log says when the backlog grows past each power of ten',
  )
})

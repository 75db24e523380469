import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { FglabClient } from '../../src/fglab/client.js'
import { Outbox } from '../../src/fglab/outbox.js'
import { OutboxStore } from '../../src/fglab/outbox-store.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { objectId } from '../helpers/ids.js'

type Line = Record<string, unknown> & { msg: string; level: number }

/** An outbox over a store in a temporary folder, with an injected clock: its waits are recorded, never slept. */
async function rig(t: Test) {
  const fglab = new FakeFglab()
  await fglab.start()
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-outbox-durable-'))
  const lines: Line[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) })
  const client = new FglabClient({ url: fglab.url, timeoutMs: 5000 })
  const waits: number[] = []
  const outboxes: Outbox[] = []
  const make = (sleep?: (ms: number) => Promise<void>) => {
    const o = new Outbox(client, log, {
      store: new OutboxStore(path.join(dir, 'outbox'), log),
      backoff: { baseMs: 10, maxMs: 100, random: () => 0.5 },
      sleep:
        sleep ??
        (async (ms) => {
          waits.push(ms)
          await new Promise((r) => setImmediate(r))
        }),
    })
    outboxes.push(o)
    return o
  }
  t.teardown(async () => {
    for (const o of outboxes) o.close()
    await client.close()
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const onDisk = (id?: string) => {
    const root = path.join(dir, 'outbox')
    if (!existsSync(root)) return 0
    const ids = id ? [id] : readdirSync(root)
    return ids.reduce((n, i) => n + (existsSync(path.join(root, i)) ? readdirSync(path.join(root, i)).filter((f) => f.endsWith('.json')).length : 0), 0)
  }
  return { fglab, dir, lines, waits, make, onDisk }
}

t.test('each report is on disk before it is sent and gone once acknowledged', async (t) => {
  const r = await rig(t)
  r.fglab.failWith(503)
  let stopped = false
  const outbox = r.make(async () => {
    // Hold the retries: FGLab stays down while we look at the disk.
    while (!stopped) await new Promise((res) => setTimeout(res, 5))
  })
  const id = objectId()
  outbox.enqueue(id, { kind: 'started' })
  outbox.enqueue(id, { kind: 'update', fields: { _status: 'success' } })
  t.equal(r.onDisk(id), 2, 'both written at once, before any answer')
  r.fglab.recover()
  stopped = true
  t.equal(await outbox.drain(id), true)
  t.equal(r.onDisk(), 0, 'removed once acknowledged')
  t.notOk(existsSync(path.join(r.dir, 'outbox', id)), "the experiment's folder goes too")
})

t.test('after a crash, a new outbox over the same folder sends what was left, in order', async (t) => {
  const r = await rig(t)
  r.fglab.failWith(503)
  let hold = true
  const first = r.make(async () => {
    while (hold) await new Promise((res) => setTimeout(res, 5))
  })
  const a = objectId()
  const b = objectId()
  first.enqueue(a, { kind: 'started' })
  first.enqueue(a, { kind: 'update', fields: { _scores: { x: 1 } } })
  first.enqueue(a, { kind: 'finished' })
  first.enqueue(b, { kind: 'update', fields: { _status: 'fail' } })
  const bytes = first.bytes()
  // The "crash": the first outbox is abandoned with everything unsent.
  first.close()
  hold = false
  await first.drain(a)
  t.equal(r.onDisk(), 4, 'all four still on disk')

  r.fglab.recover()
  const second = r.make()
  t.same(second.restore().sort(), [a, b].sort(), 'restore() names the experiments it resends for')
  t.equal(second.pending(), 4)
  t.equal(second.bytes(), bytes, 'and their size: a restored backlog counts toward the bound')
  t.equal(await second.drain(a), true)
  t.equal(await second.drain(b), true)
  t.same(r.fglab.experiment(a).calls, ['started', 'update', 'finished'], 'in order')
  t.same(r.fglab.experiment(a).fields, { _scores: { x: 1 } })
  t.same(r.fglab.experiment(b).fields, { _status: 'fail' })
  t.equal(r.onDisk(), 0)
  t.ok(r.lines.some((l) => l.msg === 'resending reports left from before the restart' && l.reports === 4))

  // New reports after a restore continue the sequence: never written over old ones.
  const third = r.make()
  t.same(third.restore(), [], 'nothing left to resend')
  third.enqueue(a, { kind: 'finished' })
  t.equal(await third.drain(a), true)
  t.equal(r.fglab.experiment(a).finished, 2, 'sending again is harmless: FGLab just records it again')
})

t.test('a report acknowledged just before a crash may be sent again, never lost (idempotent calls)', async (t) => {
  const r = await rig(t)
  const outbox = r.make()
  const id = objectId()
  outbox.enqueue(id, { kind: 'update', fields: { _notes: 'v1' } })
  await outbox.drain(id)
  // As if the crash came between FGLab's answer and the removal of the file.
  const store = new OutboxStore(path.join(r.dir, 'outbox'), pino({ level: 'silent' }))
  store.append(id, 1, JSON.stringify({ kind: 'update', fields: { _notes: 'v1' } }))
  const again = r.make()
  again.restore()
  await again.drain(id)
  t.same(r.fglab.experiment(id).calls, ['update', 'update'])
  t.equal(r.fglab.experiment(id).fields._notes, 'v1', 'the same result either way')
})

t.test('unreadable entries are logged and skipped; stray files are ignored', async (t) => {
  const r = await rig(t)
  const id = objectId()
  const folder = path.join(r.dir, 'outbox', id)
  mkdirSync(folder, { recursive: true })
  writeFileSync(path.join(folder, '000000000001.json'), '{"kind": "started"}')
  writeFileSync(path.join(folder, '000000000002.json'), '{"kind": ')
  writeFileSync(path.join(folder, '000000000003.json'), '{"kind": "rm -rf"}')
  writeFileSync(path.join(folder, 'notes.txt'), 'not an entry')
  mkdirSync(path.join(r.dir, 'outbox', 'not-an-id'))
  const outbox = r.make()
  t.same(outbox.restore(), [id])
  await outbox.drain(id)
  t.same(r.fglab.experiment(id).calls, ['started'], 'only the good entry is sent')
  t.equal(r.lines.filter((l) => l.msg === 'unreadable outbox entry skipped').length, 2)
})

t.test('a file rewritten while it waits is queued (and written) once, and sent in its final form', async (t) => {
  const r = await rig(t)
  r.fglab.failWith(503)
  let hold = true
  const outbox = r.make(async () => {
    while (hold) await new Promise((res) => setTimeout(res, 5))
  })
  const id = objectId()
  const results = path.join(r.dir, 'results')
  mkdirSync(results)
  const file = path.join(results, 'notes.json')
  writeFileSync(file, '{"_notes": "draft"}')
  outbox.enqueue(id, { kind: 'started' })
  outbox.enqueue(id, { kind: 'results-file', path: file })
  writeFileSync(file, '{"_notes": "final"}')
  outbox.enqueue(id, { kind: 'results-file', path: file })
  t.equal(r.onDisk(id), 2, 'the second mention of the file adds nothing')
  r.fglab.recover()
  hold = false
  await outbox.drain(id)
  t.same(r.fglab.experiment(id).calls, ['started', 'update'])
  t.equal(r.fglab.experiment(id).fields._notes, 'final')
})

t.test('the log says when the backlog grows past each power of ten, and when it is empty again', async (t) => {
  const r = await rig(t)
  r.fglab.failWith(503)
  let hold = true
  const outbox = r.make(async () => {
    while (hold) await new Promise((res) => setTimeout(res, 5))
  })
  const ids = Array.from({ length: 1000 }, objectId)
  for (const id of ids) outbox.enqueue(id, { kind: 'finished' })
  const growing = r.lines.filter((l) => l.msg === 'reports to FGLab are piling up (is FGLab reachable?)')
  t.same(growing.map((l) => l.pending), [100, 1000], 'said at 100 and at 1000, not at every report')
  t.equal(outbox.pending(), 1000)
  r.fglab.recover()
  hold = false
  await Promise.all(ids.map((id) => outbox.drain(id)))
  t.ok(r.lines.some((l) => l.msg === 'every report to FGLab is sent'))
  t.equal(r.onDisk(), 0)
})

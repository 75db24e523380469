import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { FglabClient } from '../../src/fglab/client.js'
import { Delivery } from '../../src/fglab/delivery.js'
import { Outbox } from '../../src/fglab/outbox.js'
import { Ledgers } from '../../src/results/ledger.js'
import { nodeDisk } from '../../src/util/disk.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { objectId } from '../helpers/ids.js'
import { TestClock } from '../helpers/test-clock.js'

type LogLine = Record<string, unknown> & { level: number; msg: string }
const WARN = 40
const ERROR = 50

interface Rig {
  fglab: FakeFglab
  outbox: Outbox
  ledgers: Ledgers
  clock: TestClock
  lines: LogLine[]
  dir: string
  /** A results file in the rig's folder. */
  file(name: string, content: string | Buffer): string
  /** Another outbox over the same folders (a restart). */
  again(): Outbox
}

async function rig(t: Test, opts: { maxFileBytes?: number } = {}): Promise<Rig> {
  const fglab = new FakeFglab()
  await fglab.start()
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-outbox-'))
  const lines: LogLine[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) })
  const client = new FglabClient({ url: fglab.url, timeoutMs: 5000 })
  const clock = new TestClock()
  const make = () => {
    const ledgers = new Ledgers(nodeDisk, path.join(dir, 'experiments'), log)
    const delivery = new Delivery(client, log, { backoff: { baseMs: 500, maxMs: 30_000, random: () => 0.5 }, sleep: clock.sleep, now: clock.now })
    return { ledgers, outbox: new Outbox({ dir: path.join(dir, 'outbox'), disk: nodeDisk, client, delivery, ledgers, log, maxBytes: 1 << 20, maxFileBytes: opts.maxFileBytes ?? 1 << 30 }) }
  }
  const first = make()
  const outboxes = [first.outbox]
  t.teardown(async () => {
    for (const o of outboxes) o.close()
    await client.close()
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return {
    fglab,
    ...first,
    clock,
    lines,
    dir,
    file(name, content) {
      const p = path.join(dir, name)
      writeFileSync(p, content)
      return p
    },
    again() {
      const o = make().outbox
      outboxes.push(o)
      return o
    },
  }
}

t.test('reports go out in order per experiment; FGLab\'s {"msg":"error"} is not read as a refusal', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.outbox.report(id, { kind: 'started' })
  r.outbox.report(id, { kind: 'file', path: r.file('scores.json', '{"_scores": {"acc": 0.9}, "_id": "x"}') })
  r.outbox.report(id, { kind: 'file', path: r.file('log.txt', 'some text') })
  r.outbox.report(id, { kind: 'summary', summary: { FGMachine: 'success: exit code 0', exit_code: 0 } })
  r.outbox.report(id, { kind: 'status', status: 'success' })
  r.outbox.report(id, { kind: 'finished' })
  t.equal(await r.outbox.drain(id), true)
  const e = r.fglab.experiment(id)
  t.strictSame(e.calls, ['started', 'update', 'files', 'update', 'update', 'finished'])
  t.strictSame(e.fields, { _scores: { acc: 0.9 }, FGMachine: 'success: exit code 0', exit_code: 0, _status: 'success' }, '_id is not sent; the summary\'s fields are top-level')
  t.equal(e.files.get('log.txt')?.type, 'text/plain')
  t.equal(e.files.get('log.txt')?.data?.toString(), 'some text')
  t.strictSame(r.clock.sleeps, [], 'nothing was retried')
})

t.test('an outage (503, or no connection) is retried with growing waits until FGLab is back; everything then arrives once', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.fglab.failWith('reset')
  r.outbox.report(id, { kind: 'started' })
  r.outbox.report(id, { kind: 'finished' })
  await r.fglab.waitFor(() => r.clock.sleeps.length >= 3, 5000, 'retries')
  r.fglab.failWith(503)
  await r.fglab.waitFor(() => r.clock.sleeps.length >= 12, 5000, 'more retries')
  r.fglab.recover()
  t.equal(await r.outbox.drain(id), true)
  t.strictSame(r.fglab.experiment(id).calls, ['started', 'finished'])
  t.same(r.clock.sleeps.slice(0, 8), [375, 750, 1500, 3000, 6000, 12000, 22500, 22500], 'the waits grow and cap')
  t.ok(r.lines.filter((l) => l.level === WARN && l.msg === 'report to FGLab failed; will retry').length >= 12)
  t.notOk(r.lines.some((l) => /given up/.test(l.msg)), 'an outage never gives a report up, however long')
})

t.test('a 4xx is a refusal: given up at once, and the reports after it go on', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.fglab.failWith(413)
  r.outbox.report(id, { kind: 'file', path: r.file('big.png', 'x'.repeat(100)) })
  await r.fglab.waitFor(() => r.lines.some((l) => l.level === ERROR), 5000, 'the refusal')
  r.fglab.recover()
  r.outbox.report(id, { kind: 'finished' })
  await r.outbox.drain(id)
  t.strictSame(r.fglab.experiment(id).calls, ['finished'])
  t.strictSame(r.clock.sleeps, [])
  const ledger = await r.ledgers.open(id)
  t.match(ledger.keepFolder(), /^big\.png was not sent: FGLab refused it \(.*413/, 'the folder must stay')
})

t.test('FGLab refusing one report for good (MongoDB): given up after the same 500 over time, and the status still follows', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.outbox.report(id, { kind: 'started' })
  // A results update MongoDB refuses, that no check here foresaw (the document grew past 16 MiB with earlier ones).
  r.fglab.experiment(id).fields.big = 'x'.repeat(16 * 1024 * 1024 - 100)
  r.outbox.report(id, { kind: 'file', path: r.file('more.json', JSON.stringify({ more: 'y'.repeat(1000) })) })
  r.outbox.report(id, { kind: 'status', status: 'success' })
  r.outbox.report(id, { kind: 'finished' })
  await r.outbox.drain(id)
  const e = r.fglab.experiment(id)
  t.ok(e.refused >= 4, `refused ${e.refused} times before it was given up`)
  t.ok(r.clock.t - Date.UTC(2026, 11, 1) >= 10_000, 'over at least 10 s')
  t.equal(e.finished, 1, 'finished arrives')
  t.match(r.lines.find((l) => l.msg === 'FGLab keeps refusing a report; it is given up'), { report: 'file:more.json', err: /500 MongoError: Resulting document after update is larger/ })
  t.match((await r.ledgers.open(id)).keepFolder(), /^more\.json was not sent: FGLab answered 500/)
})

t.test('a proxy that cuts off every upload: the file is given up once FGLab otherwise answers, and the status follows', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.fglab.refuse = (call) => (call.path.endsWith('/files') ? 'reset' : undefined)
  r.outbox.report(id, { kind: 'file', path: r.file('model.ckpt', Buffer.alloc(512 * 1024)) })
  r.outbox.report(id, { kind: 'status', status: 'success' })
  r.outbox.report(id, { kind: 'finished' })
  await r.outbox.drain(id)
  t.equal(r.fglab.experiment(id).fields._status, 'success')
  t.equal(r.fglab.experiment(id).finished, 1)
  t.match((await r.ledgers.open(id)).keepFolder(), /^model\.ckpt was not sent: PUT \/api\/v1\/experiments\/\w+\/files: FGLab unreachable \(.*\) \d+ times in \d+ s, while it answers for the experiment/)
})

t.test('a 500 while FGLab cannot answer for the experiment either is an outage: never given up', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.fglab.failWith(500)
  r.outbox.report(id, { kind: 'finished' })
  await r.fglab.waitFor(() => r.clock.sleeps.length >= 20, 5000, 'twenty tries')
  t.notOk(r.lines.some((l) => /given up/.test(l.msg)))
  r.fglab.recover()
  await r.outbox.drain(id)
  t.equal(r.fglab.experiment(id).finished, 1)
})

t.test('an experiment deleted in FGLab while it runs: nothing more is sent for it, its folder stays, one log line', async (t) => {
  const r = await rig(t)
  const id = objectId()
  const other = objectId()
  r.outbox.report(id, { kind: 'started' })
  await r.outbox.drain(id)
  r.fglab.deleteExperiment(id)
  for (const name of ['a.png', 'b.png', 'c.png']) r.outbox.report(id, { kind: 'file', path: r.file(name, name) })
  r.outbox.report(id, { kind: 'status', status: 'success' })
  r.outbox.report(id, { kind: 'finished' })
  r.outbox.report(other, { kind: 'finished' })
  t.equal(await r.outbox.drain(id), true, 'its reports all end')
  const uploads = r.fglab.calls.filter((c) => c.path.endsWith(`${id}/files`))
  t.equal(uploads.length, 3, 'the first file was tried three times, then FGLab was asked; the others not at all')
  t.equal(r.fglab.calls.filter((c) => c.method === 'GET').length, 1, 'asked once')
  t.equal(r.lines.filter((l) => /FGLab no longer has this experiment/.test(l.msg)).length, 1, 'logged once')
  t.equal((await r.ledgers.open(id)).keepFolder(), 'the experiment was deleted in FGLab')
  t.equal(r.fglab.experiment(other).finished, 1, 'other experiments are unaffected')
  // After a restart too.
  const again = r.again()
  again.report(id, { kind: 'finished' })
  await again.drain(id)
  t.equal(r.fglab.calls.filter((c) => c.path.includes(id)).length, 3 + 1 + 1, 'nothing more')
})

t.test('results files', async (t) => {
  t.test('{} sets nothing (FGLab would answer 500): nothing sent, nothing kept', async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.outbox.report(id, { kind: 'file', path: r.file('empty.json', '{}') })
    r.outbox.report(id, { kind: 'file', path: r.file('only-id.json', '{"_id": "abc"}') })
    await r.outbox.drain(id)
    t.strictSame(r.fglab.experiment(id).calls, [])
    t.equal((await r.ledgers.open(id)).keepFolder(), undefined)
  })

  t.test('a name FGLab cannot store (a "." or a "$"): uploaded as a file, and the experiment says why', async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.outbox.report(id, { kind: 'file', path: r.file('scores.json', JSON.stringify({ _scores: { 'mAP@0.5': 0.31 } })) })
    r.outbox.report(id, { kind: 'file', path: r.file('dollar.json', JSON.stringify({ $where: 1 })) })
    r.outbox.report(id, { kind: 'summary', summary: { exit_code: 0 } })
    await r.outbox.drain(id)
    const e = r.fglab.experiment(id)
    t.equal(e.refused, 0, 'never sent as fields')
    t.equal(e.files.get('scores.json')?.data?.toString(), JSON.stringify({ _scores: { 'mAP@0.5': 0.31 } }))
    t.equal(e.files.get('scores.json')?.type, 'application/json')
    t.match(e.fields.FGMachine_results, /^scores\.json: uploaded as a file, not as fields: field name "mAP@0\.5" has a "\." in it, which FGLab \(MongoDB\) cannot store: rename it \(e\.g\. "mAP@0_5"\) \| dollar\.json: .*starts with "\$"/)
    t.equal(typeof e.fields.FGMachine_results, 'string', 'readable on the page')
    t.equal((await r.ledgers.open(id)).keepFolder(), undefined, 'FGLab has them: the folder may go')
  })

  t.test('a file queued again in a form FGLab already has is not sent again, and its note stands', async (t) => {
    const r = await rig(t)
    const id = objectId()
    const p = r.file('scores.json', JSON.stringify({ _scores: { 'mAP@0.5': 0.31 } }))
    r.outbox.report(id, { kind: 'file', path: p })
    await r.outbox.drain(id)
    // The watch saw it half written, the final sweep whole: queued again, unchanged since it was sent.
    r.outbox.report(id, { kind: 'file', path: p })
    r.outbox.report(id, { kind: 'summary', summary: {} })
    await r.outbox.drain(id)
    const e = r.fglab.experiment(id)
    t.strictSame(e.calls, ['files', 'update'], 'uploaded once')
    t.match(e.fields.FGMachine_results, /^scores\.json: uploaded as a file, not as fields/)
  })

  t.test('a chart too big for one document: uploaded as a file', async (t) => {
    const r = await rig(t)
    const id = objectId()
    const points = Array.from({ length: 1_500_000 }, (_, i) => i + 0.5)
    r.outbox.report(id, { kind: 'file', path: r.file('chart.json', JSON.stringify({ _charts: { columnNames: ['loss'], data: { columns: [['loss', ...points]] } } })) })
    r.outbox.report(id, { kind: 'summary', summary: {} })
    await r.outbox.drain(id)
    const e = r.fglab.experiment(id)
    t.equal(e.refused, 0)
    t.ok(e.files.has('chart.json'))
    t.match(e.fields.FGMachine_results, /chart\.json: uploaded as a file, not as fields: it is 23\.3 MiB as BSON, more than one FGLab document holds/)
  })

  t.test('a file over FGMACHINE_MAX_FILE_MB is not sent; the folder stays and the experiment says why', async (t) => {
    const r = await rig(t, { maxFileBytes: 1024 })
    const id = objectId()
    r.outbox.report(id, { kind: 'file', path: r.file('model.ckpt', Buffer.alloc(5000)) })
    r.outbox.report(id, { kind: 'summary', summary: {} })
    await r.outbox.drain(id)
    const e = r.fglab.experiment(id)
    t.equal(e.files.size, 0)
    t.match(e.fields.FGMachine_results, /^model\.ckpt: not sent: 0\.0 MiB, more than FGMACHINE_MAX_FILE_MB \(0 MB\)/)
    t.match((await r.ledgers.open(id)).keepFolder(), /^model\.ckpt was not sent/)
  })

  t.test('a .json file that is not an object is uploaded as a file', async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.outbox.report(id, { kind: 'file', path: r.file('broken.json', '{"_notes": "half') })
    r.outbox.report(id, { kind: 'file', path: r.file('list.json', '[1, 2, 3]') })
    await r.outbox.drain(id)
    const e = r.fglab.experiment(id)
    t.strictSame(e.calls, ['files', 'files'])
    t.equal(e.files.get('broken.json')?.data?.toString(), '{"_notes": "half')
    t.equal(e.files.get('list.json')?.data?.toString(), '[1, 2, 3]')
  })

  t.test('a binary file arrives byte for byte, with its type; odd names survive', async (t) => {
    const r = await rig(t)
    const id = objectId()
    const bytes = Buffer.from(Array.from({ length: 256 * 1024 }, (_, i) => (i * 7) & 255))
    r.outbox.report(id, { kind: 'file', path: r.file('plot.png', bytes) })
    r.outbox.report(id, { kind: 'file', path: r.file('naïve "quoted" name.txt', 'x') })
    await r.outbox.drain(id)
    t.same(r.fglab.experiment(id).files.get('plot.png')?.data, bytes)
    t.equal(r.fglab.experiment(id).files.get('plot.png')?.type, 'image/png')
    t.ok(r.fglab.experiment(id).files.has('naïve %22quoted%22 name.txt'), 'quotes escaped as browsers do')
  })

  t.test('a file queued twice before its turn is sent once, in its latest form', async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.fglab.failWith(503)
    const p = r.file('out.txt', 'first')
    r.outbox.report(id, { kind: 'started' })
    t.equal(r.outbox.report(id, { kind: 'file', path: p }), true)
    writeFileSync(p, 'second')
    t.equal(r.outbox.report(id, { kind: 'file', path: p }), false, 'already waiting')
    r.fglab.recover()
    await r.outbox.drain(id)
    t.strictSame(r.fglab.experiment(id).calls, ['started', 'files'])
    t.equal(r.fglab.experiment(id).files.get('out.txt')?.data?.toString(), 'second')
  })

  t.test('a missing file is skipped with a warning, not retried', async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.outbox.report(id, { kind: 'file', path: path.join(r.dir, 'gone.txt') })
    r.outbox.report(id, { kind: 'finished' })
    await r.outbox.drain(id)
    t.strictSame(r.fglab.experiment(id).calls, ['finished'])
    t.match(r.lines.find((l) => l.level === WARN), { file: 'gone.txt', experimentId: id })
    t.strictSame(r.clock.sleeps, [])
  })
})

t.test('after a restart: what was queued is sent, but nothing the ledger says FGLab has', async (t) => {
  const r = await rig(t)
  const id = objectId()
  const p = r.file('a.txt', 'one')
  r.outbox.report(id, { kind: 'started' })
  r.outbox.report(id, { kind: 'file', path: p })
  await r.outbox.drain(id)
  r.fglab.failWith(503)
  r.outbox.report(id, { kind: 'started' })
  r.outbox.report(id, { kind: 'file', path: p })
  r.outbox.report(id, { kind: 'finished' })
  await r.fglab.waitFor(() => r.clock.sleeps.length > 0, 5000, 'a retry')
  r.outbox.close()
  r.fglab.recover()
  const again = r.again()
  t.same(await again.restore(), [id])
  await again.drain(id)
  t.strictSame(r.fglab.experiment(id).calls, ['started', 'files', 'finished'], 'started and a.txt were not sent again')
})

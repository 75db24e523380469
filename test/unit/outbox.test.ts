import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { FglabClient, FglabError } from '../../src/fglab/client.js'
import { Outbox } from '../../src/fglab/outbox.js'
import { backoffDelay, retry } from '../../src/util/retry.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { objectId } from '../helpers/ids.js'

type LogLine = Record<string, unknown> & { level: number; msg: string }

const WARN = 40
const ERROR = 50
const BACKOFF = { baseMs: 10, maxMs: 100, random: () => 0.5 }
/** With random() = 0.5 a wait is ¾ of min(maxMs, baseMs·2^attempt), rounded. */
const EXPECTED_WAITS = [8, 15, 30, 60, 75, 75]

interface Rig {
  fglab: FakeFglab
  client: FglabClient
  outbox: Outbox
  /** Every wait the outbox asked for, in order. */
  waits: number[]
  lines: LogLine[]
  dir: string
  /** Called on every wait, before it resolves; the wait's index is its argument. */
  onWait: (n: number) => void
  /** Called on every log line as it is written. */
  onLog: (line: LogLine) => void
}

async function rig(t: Test, fglab = new FakeFglab(), url?: string): Promise<Rig> {
  await fglab.start()
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-outbox-'))
  const lines: LogLine[] = []
  const waits: number[] = []
  const r = { fglab, waits, lines, dir, onWait: () => {}, onLog: () => {} } as unknown as Rig
  const log = pino(
    { level: 'debug' },
    {
      write(s: string) {
        const line = JSON.parse(s) as LogLine
        lines.push(line)
        r.onLog(line)
      },
    },
  )
  r.client = new FglabClient({ url: url ?? fglab.url, timeoutMs: 5000 })
  r.outbox = new Outbox(r.client, log, {
    backoff: BACKOFF,
    sleep: async (ms) => {
      waits.push(ms)
      r.onWait(waits.length)
    },
  })
  t.teardown(async () => {
    r.outbox.close()
    await r.client.close()
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return r
}

function file(r: Rig, name: string, content: string | Buffer): string {
  const p = path.join(r.dir, name)
  writeFileSync(p, content)
  return p
}

t.test('reports go out in order per experiment', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.outbox.enqueue(id, { kind: 'started' })
  r.outbox.enqueue(id, { kind: 'update', fields: { _notes: 'hello' } })
  r.outbox.enqueue(id, { kind: 'results-file', path: file(r, 'scores.json', '{"_scores": {"acc": 0.9}}') })
  r.outbox.enqueue(id, { kind: 'results-file', path: file(r, 'log.txt', 'some text') })
  r.outbox.enqueue(id, { kind: 'update', fields: { _status: 'success' } })
  r.outbox.enqueue(id, { kind: 'finished' })
  await r.outbox.drain(id)
  const e = r.fglab.experiment(id)
  t.strictSame(e.calls, ['started', 'update', 'update', 'files', 'update', 'finished'])
  t.strictSame(e.fields, { _notes: 'hello', _scores: { acc: 0.9 }, _status: 'success' })
  t.equal(e.files.get('log.txt')?.type, 'text/plain')
  t.equal(e.files.get('log.txt')?.data.toString(), 'some text')
  t.strictSame(r.waits, [], 'nothing was retried')
  t.equal(r.outbox.pending(), 0)
})

t.test('experiments are sent independently', async (t) => {
  const r = await rig(t)
  const ids = [objectId(), objectId(), objectId()]
  for (const id of ids) {
    r.outbox.enqueue(id, { kind: 'started' })
    r.outbox.enqueue(id, { kind: 'update', fields: { who: id } })
    r.outbox.enqueue(id, { kind: 'finished' })
  }
  await Promise.all(ids.map((id) => r.outbox.drain(id)))
  for (const id of ids) {
    t.strictSame(r.fglab.experiment(id).calls, ['started', 'update', 'finished'])
    t.equal(r.fglab.experiment(id).fields.who, id)
  }
})

t.test('a 503 outage is retried with backoff until FGLab recovers; everything then arrives once', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.fglab.failWith(503)
  let drained = false
  r.onWait = (n) => {
    t.notOk(drained, `drain() has not resolved during the outage (wait ${n})`)
    if (n === 6) r.fglab.recover()
  }
  r.outbox.enqueue(id, { kind: 'started' })
  r.outbox.enqueue(id, { kind: 'update', fields: { _status: 'success' } })
  r.outbox.enqueue(id, { kind: 'finished' })
  t.equal(r.outbox.pending(id), 3)
  t.equal(await r.outbox.drain(id).finally(() => (drained = true)), true)
  const e = r.fglab.experiment(id)
  t.strictSame(e.calls, ['started', 'update', 'finished'])
  t.equal(e.started, 1)
  t.equal(e.finished, 1)
  t.equal(e.fields._status, 'success')
  t.strictSame(r.waits, EXPECTED_WAITS, 'the waits grow and cap')
  const warns = r.lines.filter((l) => l.level === WARN)
  t.equal(warns.length, 6)
  t.strictSame(
    warns.map((l) => l.attempt),
    [1, 2, 3, 4, 5, 6],
  )
  t.ok(warns.every((l) => l.experimentId === id && l.report === 'started'))
  t.equal(r.outbox.pending(id), 0)
})

t.test('the outbox is bounded: past maxBytes it is full until FGLab has taken half of it', async (t) => {
  const r = await rig(t)
  const lines: LogLine[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) })
  const outbox = new Outbox(r.client, log, { backoff: BACKOFF, maxBytes: 400, sleep: (ms) => delay(Math.min(ms, 5)) })
  t.teardown(() => outbox.close())
  r.fglab.failWith(503)
  const ids = [objectId(), objectId()]
  const entry = { kind: 'update', fields: { _notes: 'x'.repeat(60) } } as const
  const size = Buffer.byteLength(JSON.stringify(entry))
  let n = 0
  while (!outbox.full()) {
    outbox.enqueue(ids[n % 2]!, entry)
    n++
    t.ok(n < 100, 'it fills')
  }
  t.equal(n, Math.ceil(400 / size), 'full exactly when the bytes waiting reach maxBytes')
  t.equal(outbox.bytes(), n * size)
  t.match(lines.find((l) => l.level === ERROR), { msg: /the outbox is full: no new experiments are taken/, maxBytes: 400 })
  outbox.enqueue(ids[0]!, entry)
  t.equal(outbox.pending(), n + 1, 'a full outbox still takes the reports of what runs: it refuses new work, not reports')
  r.fglab.recover()
  await Promise.all(ids.map((id) => outbox.drain(id)))
  t.equal(outbox.full(), false)
  t.equal(outbox.bytes(), 0)
  t.ok(lines.find((l) => /the outbox has room again/.test(l.msg)))
  t.equal(r.fglab.experiment(ids[0]!).calls.length + r.fglab.experiment(ids[1]!).calls.length, n + 1, 'everything arrived')
})

t.test('a dropped connection is retried too', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.fglab.failWith('reset')
  r.onWait = (n) => {
    if (n === 2) r.fglab.recover()
  }
  r.outbox.enqueue(id, { kind: 'finished' })
  await r.outbox.drain(id)
  t.equal(r.fglab.experiment(id).finished, 1)
  t.equal(r.waits.length, 2)
})

t.test('a report FGLab refuses (404) is dropped after one try and the queue moves on', async (t) => {
  t.test('an experiment FGLab does not know', async (t) => {
    const r = await rig(t)
    const good = objectId()
    const bad = 'not-an-experiment'
    r.outbox.enqueue(bad, { kind: 'started' })
    r.outbox.enqueue(bad, { kind: 'update', fields: { x: 1 } })
    r.outbox.enqueue(good, { kind: 'started' })
    await Promise.all([r.outbox.drain(bad), r.outbox.drain(good)])
    t.strictSame(r.waits, [], 'no retry')
    const errors = r.lines.filter((l) => l.level === ERROR)
    t.strictSame(
      errors.map((l) => [l.experimentId, l.report]),
      [
        [bad, 'started'],
        [bad, 'update'],
      ],
    )
    t.match(errors[0]?.err, /404/)
    t.equal(r.fglab.experiment(good).started, 1, 'other experiments are unaffected')
  })

  t.test('a refused results file is dropped, and the outbox says its folder must stay', async (t) => {
    const r = await rig(t)
    const id = objectId()
    const other = objectId()
    r.fglab.failWith(413)
    r.onLog = (line) => {
      if (line.level === ERROR) r.fglab.recover()
    }
    r.outbox.enqueue(id, { kind: 'results-file', path: file(r, 'big.png', 'x'.repeat(100)) })
    r.outbox.enqueue(id, { kind: 'finished' })
    await r.outbox.drain(id)
    t.equal(r.fglab.experiment(id).files.size, 0, 'not sent again')
    t.equal(r.fglab.experiment(id).finished, 1, 'the queue moves on')
    t.match(r.lines.find((l) => l.level === ERROR), { report: 'file big.png', msg: /results folder is kept/ })
    t.equal(r.outbox.takeUnsent(id), true, 'the folder must stay')
    t.equal(r.outbox.takeUnsent(id), false, 'the answer is taken once')
    r.outbox.enqueue(other, { kind: 'update', fields: { x: 1 } })
    await r.outbox.drain(other)
    t.equal(r.outbox.takeUnsent(other), false, 'a refused field update does not hold a folder')
  })

  t.test('a refusal in the middle of a queue', async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.fglab.failWith(404)
    r.onLog = (line) => {
      if (line.level === ERROR) r.fglab.recover()
    }
    r.outbox.enqueue(id, { kind: 'started' })
    r.outbox.enqueue(id, { kind: 'update', fields: { x: 1 } })
    r.outbox.enqueue(id, { kind: 'finished' })
    await r.outbox.drain(id)
    const e = r.fglab.experiment(id)
    t.equal(e.started, 0, 'the refused report is not sent again')
    t.strictSame(e.calls, ['update', 'finished'], 'the rest follows')
    t.strictSame(r.waits, [])
  })
})

t.test('results files', async (t) => {
  t.test('a JSON object becomes fields, without _id', async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.outbox.enqueue(id, { kind: 'results-file', path: file(r, 'notes.json', JSON.stringify({ _id: 'abc', _notes: 'n', loss: 0.1 })) })
    await r.outbox.drain(id)
    const puts = r.fglab.calls.filter((c) => c.method === 'PUT' && c.path === `/api/v1/experiments/${id}`)
    t.equal(puts.length, 1)
    t.strictSame(puts[0]?.body, { _notes: 'n', loss: 0.1 }, '_id is not sent')
    t.equal(r.fglab.experiment(id).files.size, 0)
  })

  t.test('a .json file that does not parse is uploaded as a file', async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.outbox.enqueue(id, { kind: 'results-file', path: file(r, 'broken.json', '{"_notes": "half') })
    r.outbox.enqueue(id, { kind: 'results-file', path: file(r, 'list.json', '[1, 2, 3]') })
    await r.outbox.drain(id)
    const e = r.fglab.experiment(id)
    t.strictSame(e.calls, ['files', 'files'])
    t.strictSame(e.fields, {})
    t.equal(e.files.get('broken.json')?.data.toString(), '{"_notes": "half')
    t.equal(e.files.get('broken.json')?.type, 'application/json')
    t.equal(e.files.get('list.json')?.data.toString(), '[1, 2, 3]', 'so is one that holds no object')
    t.equal(r.lines.filter((l) => l.level === WARN && l.file === 'broken.json').length, 1, 'with a warning')
  })

  t.test('a binary file arrives byte for byte with its type', async (t) => {
    const r = await rig(t)
    const id = objectId()
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
    r.outbox.enqueue(id, { kind: 'results-file', path: file(r, 'plot.png', bytes) })
    await r.outbox.drain(id)
    t.same(r.fglab.experiment(id).files.get('plot.png')?.data, bytes)
    t.equal(r.fglab.experiment(id).files.get('plot.png')?.type, 'image/png')
  })

  t.test('a file enqueued twice before its turn is sent once, in its latest form', async (t) => {
    const r = await rig(t)
    const id = objectId()
    const p = path.join(r.dir, 'out.txt')
    r.outbox.enqueue(id, { kind: 'started' })
    writeFileSync(p, 'first')
    r.outbox.enqueue(id, { kind: 'results-file', path: p })
    writeFileSync(p, 'second')
    r.outbox.enqueue(id, { kind: 'results-file', path: p })
    t.equal(r.outbox.pending(id), 2, 'started and one file')
    await r.outbox.drain(id)
    const e = r.fglab.experiment(id)
    t.strictSame(e.calls, ['started', 'files'])
    t.equal(e.files.get('out.txt')?.data.toString(), 'second')
  })

  t.test('a file enqueued again while it is being sent is sent again', async (t) => {
    const r = await rig(t)
    const id = objectId()
    const p = file(r, 'notes.txt', 'draft')
    r.outbox.enqueue(id, { kind: 'results-file', path: p })
    r.outbox.enqueue(id, { kind: 'results-file', path: p })
    await r.outbox.drain(id)
    t.strictSame(r.fglab.experiment(id).calls, ['files', 'files'])
  })

  t.test('a missing file is skipped with a warning', async (t) => {
    const r = await rig(t)
    const id = objectId()
    const gone = path.join(r.dir, 'gone.txt')
    r.outbox.enqueue(id, { kind: 'results-file', path: gone })
    r.outbox.enqueue(id, { kind: 'finished' })
    await r.outbox.drain(id)
    t.strictSame(r.fglab.experiment(id).calls, ['finished'])
    const warn = r.lines.find((l) => l.level === WARN)
    t.equal(warn?.file, gone)
    t.equal(warn?.experimentId, id)
    t.strictSame(r.waits, [], 'and not retried')
  })
})

t.test('drain()', async (t) => {
  const r = await rig(t)
  t.equal(await r.outbox.drain(objectId()), true, 'resolves at once for an experiment with nothing queued')
  const id = objectId()
  r.fglab.failWith(503)
  r.outbox.enqueue(id, { kind: 'started' })
  let drained = false
  const d = r.outbox.drain(id).finally(() => (drained = true))
  r.onWait = (n) => {
    if (n === 3) {
      // Queued while the first is still failing: drain() waits for it too.
      r.outbox.enqueue(id, { kind: 'finished' })
      r.fglab.recover()
    }
  }
  await r.fglab.waitFor(() => r.fglab.experiment(id).started === 1, 5000, 'started')
  t.notOk(drained, 'not resolved while reports are still queued')
  t.equal(await d, true)
  t.equal(r.fglab.experiment(id).finished, 1, 'resolved only once the later report was acknowledged too')
})

t.test('close() stops retrying; drain() then says not everything was sent', async (t) => {
  const r = await rig(t)
  const id = objectId()
  r.fglab.failWith(503)
  r.onWait = (n) => {
    if (n === 2) r.outbox.close()
  }
  r.outbox.enqueue(id, { kind: 'started' })
  r.outbox.enqueue(id, { kind: 'finished' })
  t.equal(await r.outbox.drain(id), false)
  t.equal(r.waits.length, 2, 'no retry after close()')
  r.fglab.recover()
  await delay(50)
  t.strictSame(r.fglab.calls, [], 'nothing more is sent')
  t.equal(await r.outbox.drain(id), false, 'a later drain() says the same at once')
})

t.test(
  'a report cut off by close() is not counted as sent',
  async (t) => {
    const r = await rig(t)
    const id = objectId()
    r.fglab.failWith(503)
    r.onWait = (n) => {
      if (n === 2) r.outbox.close()
    }
    r.outbox.enqueue(id, { kind: 'finished' })
    t.equal(await r.outbox.drain(id), false, 'FGLab never acknowledged it')
    t.equal(r.outbox.pending(id), 1, 'unsent reports stay unsent')
  },
)

t.test('FglabClient', async (t) => {
  t.test('sends basic auth when the URL has credentials', async (t) => {
    const fglab = new FakeFglab({ user: 'lab', pass: 'p@ss:word' })
    await fglab.start()
    t.teardown(() => fglab.close())
    const withAuth = new FglabClient({ url: fglab.url.replace('http://', `http://lab:${encodeURIComponent('p@ss:word')}@`) })
    const without = new FglabClient({ url: fglab.url })
    t.teardown(async () => {
      await withAuth.close()
      await without.close()
    })
    t.equal(withAuth.baseUrl, fglab.url, 'credentials are not part of the base URL')
    const id = objectId()
    t.strictSame(await withAuth.experimentStarted(id), { msg: 'success' })
    t.equal(fglab.calls[0]?.auth, 'Basic ' + Buffer.from('lab:p@ss:word').toString('base64'))
    const err = await without.experimentStarted(id).catch((e: unknown) => e)
    t.type(err, FglabError)
    t.equal((err as FglabError).status, 401)
    t.equal((err as FglabError).retryable, true, 'wrong credentials are the operator\'s to fix: retried, not dropped')
    t.equal(fglab.experiment(id).started, 1)
  })

  t.test('errors say whether to retry', async (t) => {
    const fglab = new FakeFglab()
    await fglab.start()
    const client = new FglabClient({ url: fglab.url + '/' })
    t.teardown(() => client.close())
    t.equal(client.baseUrl, fglab.url, 'a trailing slash is dropped')
    for (const [status, retryable] of [
      [503, true],
      [500, true],
      [429, true],
      [408, true],
      [401, true],
      [403, true],
      [404, false],
      [400, false],
      [413, false],
    ] as const) {
      fglab.failWith(status)
      const err = (await client.experimentFinished(objectId()).catch((e: unknown) => e)) as FglabError
      t.equal(err.status, status)
      t.equal(err.retryable, retryable, `${status}: retryable ${retryable}`)
    }
    await fglab.close()
    const err = (await client.experimentFinished(objectId()).catch((e: unknown) => e)) as FglabError
    t.type(err, FglabError)
    t.equal(err.status, undefined, 'FGLab unreachable')
    t.equal(err.retryable, true)
  })

  t.test('registers and sends projects', async (t) => {
    const fglab = new FakeFglab()
    await fglab.start()
    const client = new FglabClient({ url: fglab.url })
    t.teardown(async () => {
      await client.close()
      await fglab.close()
    })
    const specs = { address: 'http://box:5081', hostname: 'box', os: { type: 'Linux', platform: 'linux', arch: 'x64', release: '6' }, cpus: ['cpu'], mem: '1GB', gpus: [] }
    const doc = await client.registerMachine(specs)
    t.match(doc._id, /^[0-9a-f]{24}$/)
    t.same(fglab.machines.get(doc._id), { ...specs, _id: doc._id })
    await client.updateProjects(doc._id, { p1: { capacity: 1 } })
    t.strictSame(fglab.projects.get(doc._id), { p1: { capacity: 1 } })
  })
})

t.test('backoffDelay grows and caps', async (t) => {
  const b = { baseMs: 10, maxMs: 100 }
  const low = [0, 1, 2, 3, 4, 5, 40, 1000].map((a) => backoffDelay(a, { ...b, random: () => 0 }))
  t.strictSame(low, [5, 10, 20, 40, 50, 50, 50, 50], 'random 0: half of min(max, base·2^attempt)')
  const mid = [0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, { ...b, random: () => 0.5 }))
  t.strictSame(mid, EXPECTED_WAITS)
  const high = [0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, { ...b, random: () => 0.999999 }))
  t.strictSame(high, [10, 20, 40, 80, 100, 100], 'random near 1: the full delay, never above maxMs')
  for (let a = 0; a < 50; a++) {
    const d = backoffDelay(a, b)
    t.ok(d >= 5 && d <= 100, `attempt ${a}: ${d} within [base/2, max]`)
  }
})

t.test('retry()', async (t) => {
  const waits: number[] = []
  const sleep = async (ms: number) => {
    waits.push(ms)
  }
  const opts = { ...BACKOFF, sleep, retryable: (e: unknown) => (e as Error).message !== 'fatal' }
  let calls = 0
  const v = await retry(async (attempt) => {
    calls++
    if (attempt < 3) throw new Error('flaky')
    return 'ok'
  }, opts)
  t.equal(v, 'ok')
  t.equal(calls, 4)
  t.strictSame(waits, EXPECTED_WAITS.slice(0, 3))

  calls = 0
  await t.rejects(
    retry(async () => {
      calls++
      throw new Error('fatal')
    }, opts),
    { message: 'fatal' },
  )
  t.equal(calls, 1, 'a non-retryable error ends it at once')

  calls = 0
  await t.rejects(
    retry(async () => {
      calls++
      throw new Error('flaky')
    }, { ...opts, maxAttempts: 3 }),
    { message: 'flaky' },
  )
  t.equal(calls, 3, 'maxAttempts is the number of tries')
})

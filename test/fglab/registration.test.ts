import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import { FglabClient } from '../../src/fglab/client.js'
import { PREVIOUS_IDS, Registration, type RegistrationOptions } from '../../src/fglab/registration.js'
import { machineSpecs } from '../../src/fglab/specs.js'
import { realSleep, type Sleep } from '../../src/util/retry.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { LogSink } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { freePort } from '../helpers/ports.js'
import { TestClock } from '../helpers/test-clock.js'

const PROJECTS = { p1: { command: 'true', capacity: 1, results: 'results' } }
const isRegister = (c: { method: string; path: string }) => c.method === 'POST' && c.path === '/api/v1/machines'
const isProjects = (c: { method: string; path: string }) => c.method === 'POST' && c.path.endsWith('/projects')

/** A fake FGLab (started unless `port` is given: it is started there later), a Registration of it, its log; all closed at the end. */
async function rig(t: Test, opts: Partial<RegistrationOptions> & { port?: number; timeoutMs?: number } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-registration-'))
  const fglab = new FakeFglab()
  const url = opts.port ? `http://127.0.0.1:${opts.port}` : await fglab.start()
  const client = new FglabClient({ url, timeoutMs: opts.timeoutMs })
  const logs = new LogSink()
  const specsFile = path.join(dir, 'specs.json')
  /** Every wait the registration asked for. */
  const waits: number[] = []
  const sleep: Sleep = opts.sleep ?? ((ms, signal) => (waits.push(ms), realSleep(ms, signal)))
  const make = () =>
    new Registration({
      client,
      log: pino({ level: 'debug' }, logs),
      specsFile,
      specs: () => machineSpecs('http://gpu-box:5081', [], 'gpu-box'),
      // Fast, but the cap is reached: 5, 10, 20, 40, 50, 50…
      backoff: { baseMs: 5, maxMs: 50, random: () => 0.999 },
      refreshMs: Infinity,
      ...opts,
      sleep,
    })
  const reg = make()
  t.teardown(async () => {
    reg.close()
    await client.close()
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const saved = () => JSON.parse(readFileSync(specsFile, 'utf8')) as Record<string, unknown>
  return { dir, fglab, client, logs, reg, make, specsFile, saved, waits }
}

t.test('every failure of the first registration is retried with capped backoff until FGLab registers the machine; each distinct one said once', async (t) => {
  const port = await freePort()
  // Short enough for the scripted hang; long enough that no other answer times out on a loaded machine.
  const r = await rig(t, { port, timeoutMs: 1500 })
  // What FGLab answers to each registration once it listens; then it answers as FGLab does.
  const script = ['500', '500', '500', '400', 'garbage', 'garbage', 'no id', 'bad id', 'hang', 'reset'] as const
  let n = 0
  r.fglab.refuse = (c) => (isRegister(c) && script[n] === 'reset' ? (n++, 'reset') : undefined)
  r.fglab.answer = (c) => {
    if (!isRegister(c) || n >= script.length) return undefined
    switch (script[n++]) {
      case '500':
        return { status: 500, body: 'MongoError: not master' }
      case '400':
        return { status: 400, body: 'Bad Request' }
      case 'garbage':
        return { status: 200, body: '<html>FGLab is starting</html>' }
      case 'no id':
        return { status: 200, body: '{}', type: 'application/json' }
      case 'bad id':
        return { status: 201, body: '{"_id": "not-an-id"}', type: 'application/json' }
      default:
        return 'hang'
    }
  }
  await r.reg.start()
  r.reg.updateProjects(PROJECTS)
  await r.fglab.waitFor(() => r.logs.lines.filter((l) => l.msg === 'registering with FGLab failed; retrying').length >= 3, 10_000, 'refused connections')
  const down = r.reg.health()
  t.equal(down.ok, false, 'not registered while FGLab is down')
  t.match(down, { fglabAnswered: false, error: /^not registered: .*FGLab unreachable/ }, 'and FGLab did not answer')
  await r.fglab.start(port)
  await r.fglab.waitFor(() => r.reg.machineId !== undefined, 30_000, 'registration')
  await r.reg.settled()
  t.equal(n, script.length, 'every scripted failure was met')
  const id = r.reg.machineId!
  t.ok(r.fglab.machines.has(id), 'FGLab has the machine')
  t.equal(r.saved()._id, id, 'specs.json holds its id')
  t.same(r.fglab.projects.get(id), PROJECTS, 'then its projects were sent')
  t.same(r.reg.health(), { ok: true })

  const failures = r.logs.lines.filter((l) => l.msg === 'registering with FGLab failed; retrying')
  const said = failures.filter((l) => (l.level as number) >= 40).map((l) => [l.level, String(l.err)])
  t.same(
    said.map(([level]) => level),
    [40, 40, 50, 50, 50, 40, 40],
    'each distinct failure said once: refused (warn), 500 (warn), 400 (error), not JSON (error), no _id (error), time-out (warn), reset (warn)',
  )
  t.match(said.map(([, err]) => err), [/unreachable.*ECONNREFUSED/, /answered 500/, /answered 400/, /no machine _id \(not JSON\): <html>/, /no machine _id: \{\}$/, /unreachable.*TIMEOUT/, /unreachable.*other side closed/])
  t.ok(failures.filter((l) => l.level === 20).length >= 4, 'the repeats at debug')
  t.ok(r.logs.find('registered with FGLab'), 'registered, said')
  t.notOk(r.logs.lines.some((l) => /for good/.test(String(l.msg))), 'never given up')
  const backoff = r.waits.filter((w) => Number.isFinite(w))
  t.ok(backoff.length >= failures.length, 'every failure waited before the next try')
  t.equal(Math.max(...backoff), 50, 'the wait grows up to its cap, and no further')
})

t.test('garbage (200, not JSON) at the first registration: not registered, FGLab answered; registered within 30 s once FGLab recovers', async (t) => {
  const r = await rig(t)
  r.fglab.answer = (c) => (isRegister(c) ? { status: 200, body: 'Cannot connect to MongoDB' } : undefined)
  await r.reg.start()
  r.reg.updateProjects(PROJECTS)
  await r.fglab.waitFor(() => r.fglab.calls.filter(isRegister).length >= 5, 10_000, 'registration attempts')
  t.equal(r.reg.machineId, undefined)
  t.match(r.reg.health(), { ok: false, fglabAnswered: true, error: /^not registered: FGLab's answer to the registration has no machine _id \(not JSON\): Cannot connect to MongoDB/ })
  t.notOk(existsSync(r.specsFile), 'no specs.json')
  t.equal(r.fglab.calls.filter(isProjects).length, 0, 'no projects sent to no machine')
  const recovered = Date.now()
  r.fglab.answer = () => undefined
  await r.fglab.waitFor(() => r.reg.machineId !== undefined, 30_000, 'registration after recovery')
  t.ok(Date.now() - recovered < 30_000, 'within 30 s')
  await r.reg.settled()
  t.same(r.fglab.projects.get(r.reg.machineId!), PROJECTS, 'projects sent')
  t.equal(r.saved()._id, r.reg.machineId)
  t.same(r.reg.health(), { ok: true })
})

t.test('a machine deleted in FGLab is noticed at the check every 5 minutes and registers again by itself', async (t) => {
  const clock = new TestClock({ auto: false })
  const r = await rig(t, { sleep: clock.sleep, refreshMs: undefined })
  await r.reg.start()
  r.reg.updateProjects(PROJECTS)
  await r.reg.settled()
  const first = r.reg.machineId!
  t.ok(first, 'registered')
  t.same(r.reg.machineIds, [first])
  t.same(clock.sleeps, [300_000], 'the next check in 5 minutes')
  const sent = () => r.fglab.calls.filter(isProjects).length
  t.equal(sent(), 1)

  // Unchanged and known: sent again, said at debug only.
  clock.advance(300_000)
  await r.fglab.waitFor(() => sent() === 2, 10_000, 'the first check')
  await r.reg.settled()
  t.equal(r.logs.lines.filter((l) => l.msg === 'projects sent to FGLab').length, 1, 'a check is not said at info')
  t.ok(r.logs.find('FGLab still knows this machine'))

  r.fglab.deleteMachine(first)
  clock.advance(299_999)
  t.equal(sent(), 2, 'not before the 5 minutes are up')
  clock.advance(1)
  await r.fglab.waitFor(() => r.reg.machineId !== undefined && r.reg.machineId !== first && r.fglab.projects.has(r.reg.machineId), 10_000, 're-registration')
  await r.reg.settled()
  const second = r.reg.machineId!
  t.equal(r.fglab.calls.filter(isRegister).length, 2, 'registered once more')
  t.same(r.fglab.projects.get(second), PROJECTS, 'its projects sent again, to the new id')
  t.same(r.saved()._id, second, 'specs.json holds the new id')
  t.same(r.saved()[PREVIOUS_IDS], [first], 'and the old one, for its containers')
  t.same(r.reg.machineIds, [second, first])
  t.match(r.logs.find(/^FGLab no longer knows machine/), { level: 50, machineId: first, msg: new RegExp(`^FGLab no longer knows machine ${first} \\(deleted in FGLab\\?\\): registering again`) })
  t.match(r.logs.find(/^registered with FGLab again/), { level: 30, machineId: second, previousIds: [first], msg: `registered with FGLab again: machine ${second} (was ${first}); its containers are still this machine's` })
  t.same(r.reg.health(), { ok: true })

  // A restart reads both back.
  r.reg.close()
  const again = r.make()
  t.teardown(() => again.close())
  await again.start()
  t.equal(again.machineId, second)
  t.same(again.machineIds, [second, first], 'the previous id is kept across restarts')
})

t.test('an unknown machine id noticed on a change: while registering again fails, not registered (FGLab answered); then registered', async (t) => {
  const r = await rig(t)
  const gone = objectId()
  const older = objectId()
  writeFileSync(r.specsFile, JSON.stringify({ _id: gone, [PREVIOUS_IDS]: [older] }))
  r.fglab.answer = (c) => (isRegister(c) ? { status: 502, body: '<html>Bad Gateway</html>' } : undefined)
  await r.reg.start()
  t.same(r.reg.machineIds, [gone, older])
  r.reg.updateProjects(PROJECTS)
  await r.fglab.waitFor(() => r.fglab.calls.filter(isRegister).length >= 3, 10_000, 'registration attempts')
  t.equal(r.reg.machineId, undefined, 'the unknown id is no longer claimed')
  t.same(r.reg.machineIds, [gone, older], 'but its containers are still this machine\'s')
  t.match(r.reg.health(), {
    ok: false,
    fglabAnswered: true,
    error: new RegExp(`^not registered: FGLab no longer knows machine ${gone} \\(deleted in FGLab\\?\\); registering again failed: .*answered 502`),
  })
  r.fglab.answer = () => undefined
  await r.fglab.waitFor(() => r.reg.machineId !== undefined, 30_000, 'registration')
  await r.reg.settled()
  const id = r.reg.machineId!
  t.same(r.fglab.projects.get(id), PROJECTS)
  t.same(r.saved()[PREVIOUS_IDS], [gone, older], 'newest first')
  t.same(r.reg.machineIds, [id, gone, older])
  t.equal(r.fglab.calls.filter((c) => isProjects(c) && c.path.includes(gone)).length, 1, 'a 404 from FGLab is not retried on the same id')
})

t.test('a 404 that is not FGLab\'s (a proxy\'s page) makes no new machine; the projects are sent again at the next check', async (t) => {
  const clock = new TestClock({ auto: false })
  const r = await rig(t, { sleep: clock.sleep, refreshMs: 60_000 })
  await r.reg.start()
  r.reg.updateProjects(PROJECTS)
  await r.reg.settled()
  const id = r.reg.machineId!
  r.fglab.answer = (c) => (isProjects(c) ? { status: 404, body: '<html><body><h1>404 Not Found</h1>nginx</body></html>' } : undefined)
  r.reg.updateProjects({ ...PROJECTS, p2: PROJECTS.p1 })
  await r.reg.settled()
  t.equal(r.reg.machineId, id, 'still the same machine')
  t.equal(r.fglab.calls.filter(isRegister).length, 1, 'not registered again')
  t.match(r.logs.find(/^FGLab refused the projects/), { level: 50, machineId: id })
  r.fglab.answer = () => undefined
  clock.advance(60_000)
  await r.fglab.waitFor(() => Object.keys((r.fglab.projects.get(id) as object | undefined) ?? {}).length === 2, 10_000, 'the projects at the next check')
  t.same(Object.keys(r.fglab.projects.get(id) as object), ['p1', 'p2'])
})

t.test('with the shipped backoff, no wait between tries is over 15 s: FGLab back from an outage has the machine within that', async (t) => {
  const port = await freePort()
  const clock = new TestClock()
  const waits: number[] = []
  const r = await rig(t, { port, backoff: undefined, sleep: (ms, signal) => (waits.push(ms), clock.sleep(ms, signal)) })
  r.reg.start()
  await r.fglab.waitFor(() => waits.length >= 12, 10_000, 'a dozen tries against a closed port')
  t.ok(Math.max(...waits) <= 15_000, `longest wait ${Math.max(...waits)} ms`)
  t.ok(Math.max(...waits) >= 7_500, 'and it does back off')
})

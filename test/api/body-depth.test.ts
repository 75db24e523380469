import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { buildApp, MAX_BODY_DEPTH } from '../../src/app.js'
import { ProjectStore } from '../../src/projects/store.js'
import { LogSink } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { IMAGE, MACHINE_ID, runnerRig } from '../helpers/runner-rig.js'

/** The app over the runner rig's FGMachine (fake engine, fake FGLab, real disk), project `p` in its projects.json. */
async function machine(t: Test) {
  const r = await runnerRig(t)
  const m = await r.boot()
  const file = path.join(r.dir, 'projects.json')
  writeFileSync(file, JSON.stringify({ p: { image: IMAGE, command: 'train', capacity: 0.25, results: r.resultsDir } }))
  const logs = new LogSink()
  const log = pino({ level: 'debug' }, logs)
  const projects = new ProjectStore(file, log, r.dir)
  await projects.reload()
  const app = await buildApp(
    { projects, scheduler: m.scheduler, experiments: m.manager, logHub: m.logHub, machineUrl: 'http://machine:5081', machineId: () => MACHINE_ID },
    { logger: log },
  )
  t.teardown(() => app.close())
  const post = (url: string, payload: string, method: 'POST' | 'PUT' = 'POST') => app.inject({ method, url, headers: { 'content-type': 'application/json' }, payload })
  return { r, m, logs, post }
}

/** `{"a":{"a":…1…}}`, `depth` objects deep. */
const nested = (depth: number) => '{"a":'.repeat(depth - 1) + '{"a":1' + '}'.repeat(depth)

t.test('a body nested 40,000 deep gets 400 and starts nothing: nothing reserved, run, written down or reported', async (t) => {
  const { r, m, logs, post } = await machine(t)
  const deep = objectId()
  for (const [what, option] of [
    ['objects', nested(40_000)],
    ['lists', '['.repeat(40_000) + ']'.repeat(40_000)],
  ] as const) {
    const payload = `{"_id":"${deep}","lr":0.1,"x":${option}}`
    t.ok(payload.length < 256 * 1024, `${what}: under the body limit (${payload.length} bytes), so the depth is what refuses it`)
    const res = await post('/projects/p', payload)
    t.equal(res.statusCode, 400, `${what}: 400`)
    t.match(res.json(), { error: `the body nests deeper than ${MAX_BODY_DEPTH} levels of {} and []: options are plain values, lists or shallow objects` })
  }
  t.equal(m.manager.get(deep), undefined, 'no run')
  t.same(m.scheduler.leases(), [], 'nothing reserved')
  const journal = path.join(r.dataDir, 'experiments')
  t.same(existsSync(journal) ? readdirSync(journal).filter((f) => f.startsWith(deep)) : [], [], 'nothing written down')
  t.notOk(logs.lines.some((l) => Number(l.level) >= 50), 'no error logged')

  // An ordinary start after it: once that is reported, anything of the deep one would have been too.
  const ok = objectId()
  const res = await post('/projects/p', JSON.stringify({ _id: ok, lr: 0.1 }))
  t.equal(res.statusCode, 200)
  await r.fglab.waitFor(() => r.fglab.experiment(ok).started > 0, 10_000, 'the ordinary start to be reported')
  t.same(r.fglab.experiment(deep).calls, [], 'FGLab was told nothing of the deep one')
  t.ok(r.docker.byExperiment(ok), 'the ordinary one has its container')
  t.equal(r.docker.byExperiment(deep), undefined, 'the deep one none')
})

t.test('a body at the depth limit is started and answered with itself; one level more is refused', async (t) => {
  const { m, post } = await machine(t)
  const id = objectId()
  // The body is one level; its option the rest.
  const body = `{"_id":"${id}","x":${nested(MAX_BODY_DEPTH - 1)}}`
  const res = await post('/projects/p', body)
  t.equal(res.statusCode, 200)
  t.same(res.json(), JSON.parse(body), 'the body, echoed')
  t.match(res.headers['content-type'], /^application\/json/)
  t.ok(m.manager.get(id), 'started')

  const over = objectId()
  t.equal((await post('/projects/p', `{"_id":"${over}","x":${nested(MAX_BODY_DEPTH)}}`)).statusCode, 400)
  t.equal(m.manager.get(over), undefined)
  t.equal((await post('/projects', `{"project_id":"q","x":${nested(MAX_BODY_DEPTH)}}`, 'PUT')).statusCode, 400, '"Add to Machine" bodies too')
})

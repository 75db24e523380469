import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import { createMachine } from '../../src/machine.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { LogSink, testConfig } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { ensureBusyboxImage, removeContainersLabelled } from '../helpers/images.js'
import { freePort } from '../helpers/ports.js'


function setup(t: Test, fglabUrl: string) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-reg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(path.join(dir, 'projects.json'), JSON.stringify({ p1: { command: 'true', capacity: 1, results: 'results' } }))
  const config = testConfig({ fglabUrl, machineUrl: 'http://gpu-box:5081', projectsPath: path.join(dir, 'projects.json'), dataDir: path.join(dir, 'data') })
  return { dir, config }
}

t.test('FGLab down at start: the service starts anyway and registers once FGLab is up', async (t) => {
  const port = await freePort()
  const { config } = setup(t, `http://127.0.0.1:${port}`)
  const logs = new LogSink()
  const machine = await createMachine(config, { log: pino({ level: 'debug' }, logs), backoff: { baseMs: 20, maxMs: 100 } })
  t.teardown(() => machine.close())
  const url = await machine.listen()
  const res = await fetch(`${url}/projects/p1/capacity`)
  t.equal(res.status, 200, 'serving while FGLab is down')
  const fglab = new FakeFglab()
  t.teardown(() => fglab.close())
  await fglab.waitFor(() => logs.lines.some((l) => l.msg === 'registering with FGLab failed; retrying'), 10_000, 'a retry')
  await fglab.start(port)
  await fglab.waitFor(() => machine.registration.machineId !== undefined, 10_000, 'registration')
  await fglab.waitFor(() => fglab.projects.size === 1, 10_000, 'projects')
  const id = machine.registration.machineId!
  const doc = fglab.machines.get(id) as Record<string, unknown>
  t.equal(doc.address, 'http://gpu-box:5081')
  t.equal(doc.hostname, os.hostname())
  t.same(doc.gpus, [])
  t.match(doc.mem, /^\d+\.\dGB$/)
  t.ok(Array.isArray(doc.cpus) && (doc.cpus as unknown[]).length === os.cpus().length)
  t.same(Object.keys(fglab.projects.get(id) as object), ['p1'])
  const saved = JSON.parse(readFileSync(path.join(config.dataDir, 'specs.json'), 'utf8'))
  t.equal(saved._id, id, 'specs.json keeps the machine id')
})

t.test('a known machine (specs.json) does not register again; credentials in FGLAB_URL are sent as basic auth', async (t) => {
  const fglab = new FakeFglab({ user: 'lab', pass: 's3cr:t' })
  t.teardown(() => fglab.close())
  const base = await fglab.start()
  const { config } = setup(t, base.replace('http://', 'http://lab:s3cr%3At@'))
  const log = pino({ level: 'silent' })
  const first = await createMachine(config, { log })
  await first.listen()
  await fglab.waitFor(() => fglab.projects.size === 1, 10_000, 'first registration')
  const id = first.registration.machineId
  await first.close()
  const second = await createMachine(config, { log })
  t.teardown(() => second.close())
  await second.listen()
  t.equal(second.registration.machineId, id, 'same machine id after a restart')
  await fglab.waitFor(() => fglab.calls.filter((c) => c.path.endsWith('/projects')).length === 2, 10_000, 'projects again')
  t.equal(fglab.calls.filter((c) => c.path === '/api/v1/machines').length, 1, 'registered once')
  t.ok(fglab.calls.every((c) => c.auth === 'Basic ' + Buffer.from('lab:s3cr:t').toString('base64')), 'every call authenticated')
})

t.test('a machine FGLab no longer knows (specs.json of a deleted machine) registers again by itself', async (t) => {
  const fglab = new FakeFglab()
  t.teardown(() => fglab.close())
  const { config } = setup(t, await fglab.start())
  const { mkdirSync } = await import('node:fs')
  mkdirSync(config.dataDir, { recursive: true })
  writeFileSync(path.join(config.dataDir, 'specs.json'), JSON.stringify({ _id: 'aaaaaaaaaaaaaaaaaaaaaaaa' }))
  const logs = new LogSink()
  const machine = await createMachine(config, { log: pino({ level: 'debug' }, logs) })
  t.teardown(() => machine.close())
  await machine.listen()
  await fglab.waitFor(() => machine.registration.machineId !== undefined && fglab.projects.has(machine.registration.machineId), 10_000, 'registering again')
  t.ok(logs.find(/^FGLab no longer knows machine aaaaaaaaaaaaaaaaaaaaaaaa/), 'said')
  t.equal(fglab.calls.filter((c) => c.path === '/api/v1/machines/aaaaaaaaaaaaaaaaaaaaaaaa/projects').length, 1, 'a 404 is not retried on the unknown id')
  const saved = JSON.parse(readFileSync(path.join(config.dataDir, 'specs.json'), 'utf8'))
  t.equal(saved._id, machine.registration.machineId)
  t.same(saved.fgmachine_previous_ids, ['aaaaaaaaaaaaaaaaaaaaaaaa'])
})

t.test('FGMACHINE_HOSTNAME is the name FGLab shows; a loopback FGMACHINE_URL with FGLab elsewhere is warned of; GPU projects without GPUs too', async (t) => {
  const fglab = new FakeFglab()
  t.teardown(() => fglab.close())
  await fglab.start()
  const { dir, config } = setup(t, fglab.url)
  writeFileSync(path.join(dir, 'projects.json'), JSON.stringify({ p1: { command: 'true', capacity: 1, results: 'results', gpu_capacity: 1, gpu_command: '--gpu' } }))
  const logs = new LogSink()
  const machine = await createMachine({ ...config, hostname: 'gpu-box-7' }, { log: pino({ level: 'debug' }, logs) })
  t.teardown(() => machine.close())
  await machine.listen()
  await fglab.waitFor(() => machine.registration.machineId !== undefined, 10_000, 'registration')
  t.equal(fglab.machines.get(machine.registration.machineId!)?.hostname, 'gpu-box-7')
  t.ok(logs.find(/^project p1: asks for GPUs, but this machine has none to give/), 'said at load')
  t.notOk(logs.find(/FGMACHINE_URL is a loopback address/), 'no warning: FGMACHINE_URL is not loopback')

  const other = setup(t, 'http://fglab.example:5080')
  const lonely = new LogSink()
  const m2 = await createMachine({ ...other.config, machineUrl: 'http://localhost:5081' }, { log: pino({ level: 'debug' }, lonely), backoff: { baseMs: 20, maxMs: 100 } })
  t.teardown(() => m2.close())
  await m2.listen()
  t.match(lonely.find(/FGMACHINE_URL is a loopback address/)?.msg, /but FGLab is at fglab\.example: FGLab cannot reach this machine there/)
})

t.test('no Docker socket: /health and the start-up log say what to do (mount it, or start Docker)', async (t) => {
  const fglab = new FakeFglab()
  t.teardown(() => fglab.close())
  await fglab.start()
  const { dir, config } = setup(t, fglab.url)
  const logs = new LogSink()
  const machine = await createMachine({ ...config, dockerHost: `unix://${dir}/no-such-docker.sock` }, { log: pino({ level: 'debug' }, logs), backoff: { baseMs: 20, maxMs: 100 } })
  t.teardown(() => machine.close())
  const url = await machine.listen()
  const health = (await (await fetch(`${url}/health`)).json()) as { docker: { error: string } }
  t.match(health.docker.error, /no Docker socket at .*no-such-docker\.sock: is Docker installed and running.*-v \/var\/run\/docker\.sock:\/var\/run\/docker\.sock/)
  t.ok(logs.find(/no Docker socket at .*container projects fail until Docker answers/), 'and the log at start')
})

const isRegister = (c: { method: string; path: string }) => c.method === 'POST' && c.path === '/api/v1/machines'

t.test('garbage at the first registration: /health says unhealthy, not registered; registered within 30 s once FGLab answers as itself', async (t) => {
  const fglab = new FakeFglab()
  t.teardown(() => fglab.close())
  const { config } = setup(t, await fglab.start())
  fglab.answer = (c) => (isRegister(c) ? { status: 200, body: '<!DOCTYPE html><title>Welcome to nginx!</title>' } : undefined)
  const logs = new LogSink()
  const machine = await createMachine(config, { log: pino({ level: 'debug' }, logs), backoff: { baseMs: 20, maxMs: 200 } })
  t.teardown(() => machine.close())
  const url = await machine.listen()
  await fglab.waitFor(() => fglab.calls.filter(isRegister).length >= 3, 10_000, 'registration attempts')
  const sick = await fetch(`${url}/health`)
  t.equal(sick.status, 503, 'FGLab answers, but not as FGLab: unhealthy')
  t.match(await sick.json(), {
    status: 'unhealthy',
    docker: { ok: true },
    fglab: { ok: true },
    registration: { ok: false, error: /^not registered: FGLab's answer to the registration has no machine _id \(not JSON\): <!DOCTYPE html>/ },
    machine_id: null,
  })
  const recovered = Date.now()
  fglab.answer = () => undefined
  await fglab.waitFor(() => machine.registration.machineId !== undefined && fglab.projects.has(machine.registration.machineId), 30_000, 'registration')
  t.ok(Date.now() - recovered < 30_000, 'registered within 30 s')
  const well = await fetch(`${url}/health`)
  t.equal(well.status, 200)
  t.match(await well.json(), { status: 'ok', registration: { ok: true }, machine_id: machine.registration.machineId })
  t.equal(JSON.parse(readFileSync(path.join(config.dataDir, 'specs.json'), 'utf8'))._id, machine.registration.machineId)
})

/** Writes its scores, then waits for a `stop` file in its results folder before it ends. */
const WAIT_FOR_STOP =
  'd="$FGLAB_RESULTS_DIR"; echo "{\\"_scores\\": {\\"n\\": $2}}" > "$d/scores.json"; while [ ! -e "$d/stop" ]; do sleep 0.1; done; echo "{\\"_notes\\": \\"ended $2\\"}" > "$d/notes.json"; rm "$d/stop"'

t.test('a machine deleted in FGLab registers again by itself; containers running across it are reported once, adopted by their old id, removed', async (t) => {
  const image = ensureBusyboxImage()
  const fglab = new FakeFglab()
  await fglab.start()
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-reg-'))
  const results = path.join(dir, 'results')
  const projectsPath = path.join(dir, 'projects.json')
  writeFileSync(projectsPath, JSON.stringify({ p: { image, command: 'sh', args: ['-c', WAIT_FOR_STOP, 'exp'], options: 'plain', capacity: 0.5, results } }))
  const config = testConfig({ fglabUrl: fglab.url, projectsPath, dataDir: path.join(dir, 'data') })
  const machineIds: string[] = []
  t.teardown(async () => {
    for (const id of machineIds) removeContainersLabelled(`fgmachine.machine=${id}`)
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
  const containerOf = (id: string) => docker('ps', '-aq', '--filter', `label=fgmachine.experiment=${id}`)
  const machineLabel = (id: string) => docker('inspect', '-f', '{{index .Config.Labels "fgmachine.machine"}}', containerOf(id))
  const release = (id: string) => writeFileSync(path.join(results, id, 'stop'), '')
  const opts = { backoff: { baseMs: 20, maxMs: 200 }, registrationRefreshMs: 100, resultsStableMs: 50 }
  const logs = new LogSink()
  let machine = await createMachine(config, { log: pino({ level: 'debug' }, logs), ...opts })
  t.teardown(() => machine.close())
  const url = await machine.listen()
  await fglab.waitFor(() => machine.registration.machineId !== undefined && fglab.projects.has(machine.registration.machineId), 10_000, 'registration')
  const first = machine.registration.machineId!
  machineIds.push(first)
  const [a, b] = [objectId(), objectId()]
  for (const [n, id] of [a, b].entries()) {
    const res = await fetch(`${url}/projects/p`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, _id: id }) })
    t.equal(res.status, 200, `experiment ${n} accepted`)
  }
  await fglab.waitFor(() => [a, b].every((id) => fglab.experiment(id).started === 1), 30_000, 'both started')
  t.equal(machineLabel(a), first, 'its container carries the machine id')

  // Deleted in FGLab; registering again meets garbage for a while.
  fglab.answer = (c) => (isRegister(c) ? { status: 200, body: 'Service Unavailable' } : undefined)
  fglab.deleteMachine(first)
  await fglab.waitFor(() => logs.find(/^FGLab no longer knows machine/) !== undefined, 10_000, 'noticed at a check, with no change to projects.json')
  await fglab.waitFor(() => fglab.calls.filter(isRegister).length >= 3, 10_000, 'registering again')
  const sick = await fetch(`${url}/health`)
  t.equal(sick.status, 503, 'unhealthy while FGLab does not know the machine')
  t.match(await sick.json(), {
    status: 'unhealthy',
    registration: { ok: false, error: new RegExp(`^not registered: FGLab no longer knows machine ${first} \\(deleted in FGLab\\?\\); registering again failed`) },
    machine_id: null,
  })
  fglab.answer = () => undefined
  await fglab.waitFor(
    () => machine.registration.machineId !== undefined && machine.registration.machineId !== first && fglab.projects.has(machine.registration.machineId),
    30_000,
    'registered again',
  )
  const second = machine.registration.machineId!
  machineIds.push(second)
  t.same(Object.keys(fglab.projects.get(second) as object), ['p'], 'its projects sent again')
  const saved = JSON.parse(readFileSync(path.join(config.dataDir, 'specs.json'), 'utf8'))
  t.equal(saved._id, second, 'specs.json holds the new id')
  t.same(saved.fgmachine_previous_ids, [first], 'and the old one')
  t.ok(logs.find(`registered with FGLab again: machine ${second} (was ${first}); its containers are still this machine's`), 'said')
  const well = await fetch(`${url}/health`)
  t.equal(well.status, 200)
  t.match(await well.json(), { status: 'ok', registration: { ok: true }, machine_id: second })

  // One ends now: reported, its container removed.
  release(a)
  await fglab.waitFinished([a], 30_000)
  await fglab.waitFor(() => containerOf(a) === '', 20_000, 'its container removed')

  // The other runs on across a restart that lost the journal: taken up by its old id's label alone.
  t.equal(machineLabel(b), first)
  await machine.close()
  rmSync(path.join(config.dataDir, 'experiments'), { recursive: true, force: true })
  rmSync(path.join(config.dataDir, 'outbox'), { recursive: true, force: true })
  const logs2 = new LogSink()
  machine = await createMachine(config, { log: pino({ level: 'debug' }, logs2), ...opts })
  await machine.listen()
  t.equal(machine.registration.machineId, second, 'the new id after the restart')
  await fglab.waitFor(() => logs2.lines.some((l) => /^taking up a container/.test(String(l.msg)) && l.experimentId === b), 20_000, 'adoption')
  release(b)
  await fglab.waitFinished([b], 30_000)
  await fglab.waitFor(() => containerOf(b) === '', 20_000, 'its container removed')
  for (const [n, id] of [a, b].entries()) {
    const e = fglab.experiment(id)
    t.equal(e.finished, 1, `experiment ${n} reported finished exactly once`)
    t.equal(e.fields._status, 'success', `experiment ${n} succeeded`)
    t.same(e.fields._scores, { n }, `experiment ${n}: scores`)
    t.equal(e.fields._notes, `ended ${n}`, `experiment ${n}: notes written after the re-registration`)
  }
  t.equal(fglab.calls.filter((c) => isRegister(c) && c.status === 201).length, 2, 'registered twice: at first, and once more when deleted; not at the restart')
})

t.test('a machine whose address or name changed (a new port, a new hostname) updates its record in FGLab, not a new machine', async (t) => {
  const fglab = new FakeFglab()
  t.teardown(() => fglab.close())
  await fglab.start()
  const { config } = setup(t, fglab.url)
  const first = await createMachine({ ...config, hostname: 'gpu-box-1' }, { log: pino({ level: 'silent' }), backoff: { baseMs: 20, maxMs: 100 } })
  await first.listen()
  await fglab.waitFor(() => first.registration.machineId !== undefined, 10_000, 'registration')
  const id = first.registration.machineId!
  await first.close()
  const logs = new LogSink()
  const moved = await createMachine({ ...config, machineUrl: 'http://gpu-box-2:6001', hostname: 'gpu-box-2' }, { log: pino({ level: 'debug' }, logs), backoff: { baseMs: 20, maxMs: 100 } })
  t.teardown(() => moved.close())
  await moved.listen()
  await fglab.waitFor(() => logs.find(/^the machine's .* changed: its record in FGLab is updated$/) !== undefined, 10_000, 'the record updated')
  t.match(fglab.machines.get(id), { address: 'http://gpu-box-2:6001', hostname: 'gpu-box-2' })
  t.equal(fglab.machines.size, 1, 'no second machine')
  t.equal(moved.registration.machineId, id, 'the same id')
  t.match(logs.find(/^the machine's address, hostname changed: its record in FGLab is updated$/), { changed: { address: 'http://gpu-box-2:6001', hostname: 'gpu-box-2' } })
  await fglab.waitFor(() => JSON.parse(readFileSync(path.join(config.dataDir, 'specs.json'), 'utf8')).address === 'http://gpu-box-2:6001', 5000, 'specs.json updated')
})

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import { createMachine } from '../../src/machine.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { LogSink, testConfig } from '../helpers/harness.js'
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

t.test('a machine FGLab no longer knows is told to delete specs.json', async (t) => {
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
  await fglab.waitFor(() => logs.lines.some((l) => /delete .*specs\.json/.test(String(l.msg))), 10_000, 'the hint')
  t.equal(fglab.calls.filter((c) => c.path.endsWith('/projects')).length, 1, 'a 404 is not retried')
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

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import { createMachine } from '../src/machine.js'
import { nodeDisk, type Disk } from '../src/util/disk.js'
import { FakeContainerClient } from './helpers/fake-container-client.js'
import { FakeFglab } from './helpers/fake-fglab.js'
import { LogSink, testConfig } from './helpers/harness.js'
import { objectId } from './helpers/ids.js'
import { CrashDisk, IMAGE } from './helpers/runner-rig.js'
import { until } from './helpers/until.js'

/**
 * The whole machine (createMachine, listening) without Docker: the fake engine,
 * the fake FGLab, and a disk the test can fill up. Project `p` in projects.json.
 */
async function machine(t: Test, disk: Disk = nodeDisk) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-edge-'))
  const fglab = new FakeFglab()
  await fglab.start()
  const projectsPath = path.join(dir, 'projects.json')
  const resultsDir = path.join(dir, 'results')
  writeFileSync(projectsPath, JSON.stringify({ p: { image: IMAGE, command: 'train', capacity: 0.25, results: resultsDir } }))
  const logs = new LogSink()
  const docker = new FakeContainerClient()
  docker.images.add(IMAGE)
  const m = await createMachine(testConfig({ fglabUrl: fglab.url, projectsPath, dataDir: path.join(dir, 'data') }), {
    log: pino({ level: 'debug' }, logs),
    containerClient: docker,
    backoff: { baseMs: 20, maxMs: 200 },
    resultsStableMs: 20,
    disk,
    diskProbeMs: 50,
  })
  t.teardown(async () => {
    await m.close()
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const url = await m.listen()
  await fglab.waitFor(() => m.registration.machineId !== undefined, 10_000, 'registration')
  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(url + p, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
    return { status: res.status, body: (await res.json()) as Record<string, unknown> }
  }
  return {
    m,
    fglab,
    logs,
    docker,
    projectsPath,
    dataDir: path.join(dir, 'data'),
    capacity: () => call('GET', '/projects/p/capacity'),
    submit: (body: Record<string, unknown>) => call('POST', '/projects/p', body),
  }
}

const FULL = /^the data folder .*data is full \(ENOSPC: no space left on device, write .*\): experiments could not be written down; free space there/

t.test('the data folder fills up: the next start is refused with why (501, not 500), capacity says it too, and both are 200 again once there is room', async (t) => {
  const disk = new CrashDisk()
  const h = await machine(t, disk)
  t.match(await h.capacity(), { status: 200, body: { capacity: 4 } })
  disk.full = true
  const id = objectId()
  const start = await h.submit({ _id: id })
  t.match(start, { status: 501, body: { cause: 'disk_full', reason: FULL } }, 'the start that found the disk full: a refusal that says why')
  t.same(h.m.scheduler.leases(), [], 'nothing held')
  t.equal(h.docker.byExperiment(id), undefined, 'nothing run')
  t.match(await h.capacity(), { status: 501, body: { cause: 'disk_full', reason: FULL } }, 'capacity: FGLab chooses another machine')
  t.ok(h.logs.find(/^no capacity for FGLab: the data folder .* is full/), 'the log says it')

  disk.full = false
  await until(async () => (await h.capacity()).status === 200, 'capacity once there is room')
  t.match(await h.capacity(), { status: 200, body: { capacity: 4 } })
  const again = objectId()
  t.match(await h.submit({ _id: again }), { status: 200, body: { _id: again } })
  t.ok(h.m.experiments.get(again), 'started')
})

t.test('a data folder full (or read-only) at start: capacity is refused before any start is asked for', async (t) => {
  for (const [code, cause] of [
    ['ENOSPC', 'disk_full'],
    ['EROFS', 'data_unwritable'],
  ] as const) {
    const refusing = { on: true }
    const fail = (what: string) => Promise.reject(Object.assign(new Error(`${code}: ${what}`), { code }))
    const disk: Disk = {
      ...nodeDisk,
      writeAtomic: (f, d) => (refusing.on ? fail(`write ${f}`) : nodeDisk.writeAtomic(f, d)),
      append: (f, d, s) => (refusing.on ? fail(`append ${f}`) : nodeDisk.append(f, d, s)),
    }
    const h = await machine(t, disk)
    t.match(await h.capacity(), { status: 501, body: { cause } }, `${code}: ${cause}`)
    t.match(await h.submit({ _id: objectId() }), { status: 501, body: { cause } })
    refusing.on = false
    await until(async () => (await h.capacity()).status === 200, `${code}: capacity once it takes writes`)
  }
})

t.test('projects.json emptied by a truncating save: the last good projects run on, and FGLab is not told the machine has none', async (t) => {
  const h = await machine(t)
  const machineId = h.m.registration.machineId!
  await h.fglab.waitFor(() => Object.keys((h.fglab.projects.get(machineId) ?? {}) as object).includes('p'), 10_000, 'FGLab to be told of p')
  const told = h.fglab.calls.filter((c) => c.path === `/api/v1/machines/${machineId}/projects`).length

  writeFileSync(h.projectsPath, '') // `> projects.json`
  const toldNone = () => Object.keys((h.fglab.projects.get(machineId) ?? {}) as object).length === 0
  await until(() => h.logs.find(/^projects\.json is empty; keeping the last good configuration/) !== undefined || toldNone(), 'the emptied file to be seen')
  t.match(await h.capacity(), { status: 200, body: { capacity: 4 } }, 'p still has capacity')
  t.notOk(toldNone(), 'FGLab is not told that the machine has no projects')
  t.ok(Object.keys(h.fglab.projects.get(machineId) as object).includes('p'), 'FGLab still lists p for this machine')

  // Then "no projects", said as the log line says: FGLab is told that (so it would have been told before).
  writeFileSync(h.projectsPath, '{}')
  await h.fglab.waitFor(() => Object.keys((h.fglab.projects.get(machineId) ?? { p: 1 }) as object).length === 0, 10_000, 'FGLab to be told of no projects')
  const calls = h.fglab.calls.filter((c) => c.path === `/api/v1/machines/${machineId}/projects`)
  t.equal(calls.length, told + 1, 'told once more: of {}, and not of the emptied file')
  t.match(await h.capacity(), { status: 501, body: { cause: 'unknown_project' } })
})

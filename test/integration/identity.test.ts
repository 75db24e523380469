import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { machinesWorld, spawnMachine } from '../helpers/child-machine.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'
import { freePort } from '../helpers/ports.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

t.test('a second FGMachine on the same data folder exits at once, naming the folder and the one that holds it; after a crash the folder is free', async (t) => {
  const { dir, fglab } = await machinesWorld(t, 'fgm-identity-')
  const projectsPath = path.join(dir, 'projects.json')
  writeFileSync(projectsPath, JSON.stringify({ p: { image, command: 'true', capacity: 1, results: path.join(dir, 'results') } }))
  const dataDir = path.join(dir, 'data')
  const first = await spawnMachine({ fglabUrl: fglab.url, port: await freePort(), dataDir, projectsPath })
  t.teardown(() => first.crash())

  const started = Date.now()
  const second = await spawnMachine({ fglabUrl: fglab.url, port: await freePort(), dataDir, projectsPath, noWait: true })
  const code = await new Promise<number | null>((resolve) => second.child.once('exit', (c) => resolve(c)))
  t.equal(code, 75, 'exits non-zero (EX_TEMPFAIL)')
  t.ok(Date.now() - started < 15_000, `within seconds (${Date.now() - started} ms)`)
  const said = second.lines.find((l) => l.level === 60)
  t.match(String(said?.msg), `the data folder ${dataDir} is in use by another FGMachine (process ${first.child.pid} on ${os.hostname()}`)
  t.equal(fglab.machines.size, 1, 'the second never registered')
  t.ok((await fetch(`${first.url}/health`)).ok, 'the first runs on, untouched')

  // kill -9 leaves the lock behind: the next start takes it over at once (its pid is gone).
  await first.crash()
  const again = await spawnMachine({ fglabUrl: fglab.url, port: await freePort(), dataDir, projectsPath })
  t.teardown(() => again.crash())
  t.ok(again.lines.some((l) => l.msg === 'data folder locked for this FGMachine'))
})

/** Writes its scores, then waits for a `stop` file in its results folder before it ends. */
const WAIT_FOR_STOP = 'd="$FGLAB_RESULTS_DIR"; echo "{\\"_scores\\": {\\"n\\": 1}}" > "$d/scores.json"; while [ ! -e "$d/stop" ]; do sleep 0.1; done'

async function world(t: Test) {
  const { dir, fglab } = await machinesWorld(t, 'fgm-identity-')
  /** A machine's options: its own projects.json, results and data folder under `name`. */
  const place = async (name: string) => {
    mkdirSync(path.join(dir, name), { recursive: true })
    const projectsPath = path.join(dir, name, 'projects.json')
    writeFileSync(projectsPath, JSON.stringify({ p: { image, command: 'sh', args: ['-c', WAIT_FOR_STOP], capacity: 0.5, results: path.join(dir, name, 'results') } }))
    return { fglabUrl: fglab.url, port: await freePort(), dataDir: path.join(dir, name, 'data'), projectsPath, results: path.join(dir, name, 'results') }
  }
  const submit = (url: string, id: string) => fetch(`${url}/projects/p`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ _id: id }) })
  return { dir, fglab, place, submit }
}

t.test('a copy of a data folder (a copied volume, a restored backup) does not start as the machine it was copied from', async (t) => {
  const w = await world(t)
  const a = await w.place('a')
  const ma = await spawnMachine(a)
  t.teardown(() => ma.crash())
  const id = objectId()
  t.equal((await w.submit(ma.url, id)).status, 200)
  await w.fglab.waitFor(() => w.fglab.experiment(id).started === 1, 20_000, 'started on a')
  // The copy: everything but the lock (a backup, or a copy taken while a was stopped).
  const b = await w.place('b')
  cpSync(a.dataDir, b.dataDir, { recursive: true, filter: (src) => !src.endsWith('fgmachine.lock') })
  const mb = await spawnMachine({ ...b, noWait: true })
  const code = await new Promise<number | null>((resolve) => mb.child.once('exit', (c) => resolve(c)))
  t.not(code, 0, 'it does not start')
  const said = String(mb.lines.find((l) => l.level === 60)?.err && (mb.lines.find((l) => l.level === 60)!.err as { message: string }).message)
  t.match(said, `this data folder (${b.dataDir}, ${b.dataDir} to Docker) was made at ${a.dataDir}: it is a copy of another FGMachine's data folder`)
  t.match(said, `delete specs.json, identity.json, experiments/ and outbox/ in ${b.dataDir}`)
  t.notOk(mb.lines.some((l) => l.msg === 'container re-adopted'), 'nothing of a was taken up')
  writeFileSync(path.join(a.results, id, 'stop'), '')
  await w.fglab.waitFinished([id], 30_000)
  t.match(w.fglab.experiment(id), { started: 1, finished: 1, fields: { _status: 'success' } }, 'a reports its experiment, once')
})

t.test("a copy of specs.json on the same engine: neither adopts, reports nor removes the other's experiments, and the copy says so and takes none", async (t) => {
  const w = await world(t)
  const a = await w.place('a')
  const ma = await spawnMachine(a)
  t.teardown(() => ma.crash())
  await w.fglab.waitFor(() => w.fglab.machines.size === 1, 20_000, 'a registered')
  const id = objectId()
  t.equal((await w.submit(ma.url, id)).status, 200)
  await w.fglab.waitFor(() => w.fglab.experiment(id).started === 1, 20_000, 'started on a')
  const b = await w.place('b')
  mkdirSync(b.dataDir, { recursive: true })
  cpSync(path.join(a.dataDir, 'specs.json'), path.join(b.dataDir, 'specs.json'))
  const addressOfA = w.fglab.machines.get([...w.fglab.machines.keys()][0]!)?.address
  const mb = await spawnMachine(b)
  t.teardown(() => mb.crash())
  // b sees a running as its id at the address in specs.json: it does not take a's record in FGLab.
  await w.fglab.waitFor(() => mb.lines.some((l) => /^another FGMachine runs as FGLab machine .* at http:\/\/127\.0\.0\.1:\d+, the address in this machine's specs\.json/.test(String(l.msg))), 20_000, 'b to find a at its address')
  t.equal(w.fglab.machines.get([...w.fglab.machines.keys()][0]!)?.address, addressOfA, "FGLab's record still sends the id's experiments to a")
  t.notOk(w.fglab.calls.some((c) => c.method === 'PUT' && c.path.startsWith('/api/v1/machines/')), 'b never updated the record')
  await w.fglab.waitFor(() => mb.lines.some((l) => /^another FGMachine claims this machine's FGLab id/.test(String(l.msg))), 20_000, 'b to see the claim')
  const said = String(mb.lines.find((l) => /^another FGMachine claims/.test(String(l.msg)))?.msg)
  t.match(said, `started by the FGMachine whose data folder is ${a.dataDir}, not this one's`)
  t.match(said, 'delete specs.json in its data folder, start it again')
  const cap = await fetch(`${mb.url}/projects/p/capacity`)
  t.equal(cap.status, 501)
  t.match(await cap.json(), { cause: 'identity_conflict' }, 'the copy takes no experiments')
  writeFileSync(path.join(a.results, id, 'stop'), '')
  await w.fglab.waitFinished([id], 30_000)
  t.match(w.fglab.experiment(id), { started: 1, finished: 1, fields: { _status: 'success' } }, 'reported once, by a')
  t.notOk(mb.lines.some((l) => l.experimentId === id), 'b never touched it')
})

t.test('a lost data folder: the new machine takes up the containers its folder started under the old FGLab id, and reports them', async (t) => {
  const w = await world(t)
  const a = await w.place('a')
  let m = await spawnMachine(a)
  t.teardown(() => m.crash())
  await w.fglab.waitFor(() => w.fglab.machines.size === 1, 20_000, 'registered')
  const oldId = [...w.fglab.machines.keys()][0]
  const id = objectId()
  t.equal((await w.submit(m.url, id)).status, 200)
  await w.fglab.waitFor(() => w.fglab.experiment(id).started === 1, 20_000, 'started')
  await m.crash()
  rmSync(a.dataDir, { recursive: true, force: true })
  m = await spawnMachine(a)
  await w.fglab.waitFor(() => w.fglab.machines.size === 2, 20_000, 'registered anew')
  await w.fglab.waitFor(() => m.lines.some((l) => l.experimentId === id && /^taking up a container this data folder started as FGLab machine/.test(String(l.msg))), 20_000, 'taken up')
  t.match(m.lines.find((l) => l.experimentId === id && l.previousMachineId), { previousMachineId: oldId })
  writeFileSync(path.join(a.results, id, 'stop'), '')
  await w.fglab.waitFinished([id], 30_000)
  t.match(w.fglab.experiment(id), { fields: { _status: 'success', _scores: { n: 1 } } }, 'its results reach FGLab')
  t.equal(w.fglab.experiment(id).finished, 1)
})

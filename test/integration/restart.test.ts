import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { spawnMachine } from '../helpers/child-machine.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureBusyboxImage, removeContainersLabelled } from '../helpers/images.js'
import { freePort } from '../helpers/ports.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()


const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()

/** Writes its scores, then waits for a `stop` file in its results folder before it ends. */
const WAIT_FOR_STOP =
  'd="$FGLAB_RESULTS_DIR"; echo "{\\"_scores\\": {\\"n\\": $2}}" > "$d/scores.json"; echo "run $2"; while [ ! -e "$d/stop" ]; do sleep 0.1; done; echo "{\\"_notes\\": \\"ended $2\\"}" > "$d/notes.json"; rm "$d/stop"'

async function setup(t: Test, capacity: number) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-restart-'))
  const fglab = new FakeFglab()
  await fglab.start()
  const results = path.join(dir, 'results')
  const projectsPath = path.join(dir, 'projects.json')
  writeFileSync(projectsPath, JSON.stringify({ p: { image, command: 'sh', args: ['-c', WAIT_FOR_STOP, 'exp'], options: 'plain', capacity, results } }))
  const port = await freePort()
  const opts = { fglabUrl: fglab.url, port, dataDir: path.join(dir, 'data'), projectsPath }
  t.teardown(async () => {
    for (const id of fglab.machines.keys()) removeContainersLabelled(`fgmachine.machine=${id}`)
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const submit = (url: string, body: Record<string, unknown>) =>
    fetch(`${url}/projects/p`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const capacity_ = async (url: string) => {
    const res = await fetch(`${url}/projects/p/capacity`)
    return res.status === 200 ? ((await res.json()) as { capacity: number }).capacity : 0
  }
  const release = (id: string) => writeFileSync(path.join(results, id, 'stop'), '')
  const containerState = (id: string) => docker('ps', '-a', '--filter', `label=fgmachine.experiment=${id}`, '--format', '{{.State}}')
  return { dir, fglab, results, opts, submit, capacity: capacity_, release, containerState }
}

t.test('killed -9 with four experiments running (one ends while it is down): all four delivered, none started twice, capacity held', async (t) => {
  const s = await setup(t, 0.25)
  let m = await spawnMachine(s.opts)
  t.teardown(() => m.crash())
  await s.fglab.waitFor(() => s.fglab.projects.size === 1, 20_000, 'registration')
  const ids = Array.from({ length: 4 }, objectId)
  for (const [n, id] of ids.entries()) t.equal((await s.submit(m.url, { n, _id: id })).status, 200)
  await s.fglab.waitFor(() => ids.every((id) => s.fglab.experiment(id).started === 1), 30_000, 'all started')
  t.equal(await s.capacity(m.url), 0, 'full')

  const firstLines = m.lines
  await m.crash()
  t.same(ids.map(s.containerState), ['running', 'running', 'running', 'running'], 'a crash of FGMachine leaves the containers running')
  // One ends while FGMachine is down.
  s.release(ids[3]!)
  const deadline = Date.now() + 20_000
  while (s.containerState(ids[3]!) !== 'exited' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  t.equal(s.containerState(ids[3]!), 'exited')

  m = await spawnMachine(s.opts)
  t.ok((await s.capacity(m.url)) <= 1, 'right after the restart the running experiments hold their capacity')
  await s.fglab.waitFinished([ids[3]!], 30_000)
  t.equal(await s.capacity(m.url), 1, 'three re-adopted experiments hold three quarters')
  const extra = objectId()
  t.equal((await s.submit(m.url, { n: 9, _id: extra })).status, 200, 'the quarter left is free')
  t.equal((await s.submit(m.url, { n: 10, _id: objectId() })).status, 501, 'and nothing more: re-adopted leases are exact')

  // The re-adopted ones are followed: their output and their end.
  for (const id of [...ids.slice(0, 3), extra]) s.release(id)
  await s.fglab.waitFinished([...ids, extra], 30_000)
  for (const [n, id] of ids.entries()) {
    const e = s.fglab.experiment(id)
    t.equal(e.fields._status, 'success', `experiment ${n} succeeded`)
    t.same(e.fields._scores, { n }, `experiment ${n}: scores`)
    t.equal(e.fields._notes, `ended ${n}`, `experiment ${n}: results written after the restart`)
    // A report acknowledged just before the crash may be sent again (harmless); a launch never is.
    t.ok(e.started >= 1, `experiment ${n} reported started`)
  }
  const launched = firstLines.filter((l) => l.msg === 'container started').map((l) => l.experimentId)
  t.same(launched.sort(), [...ids].sort(), 'the first FGMachine started each container once')
  t.equal(docker('ps', '-a', '-q', '--filter', `label=fgmachine.experiment=${ids[0]}`), '', 'containers removed once reported')
  const starts = m.lines.filter((l) => l.msg === 'starting experiment').map((l) => l.experimentId)
  t.same(starts, [extra], 'the restarted FGMachine launched only the new experiment')
  t.ok(m.lines.some((l) => l.msg === 'container re-adopted' && l.experimentId === ids[0]), 'running containers were re-adopted')
  await s.fglab.waitFor(() => readdirSync(s.results).length === 0, 10_000, 'results folders removed').catch(() => undefined)
  t.same(readdirSync(s.results), [], 'every results folder removed')
})

t.test('FGLab down for 15 s while experiments end, FGMachine crashing in the middle: everything arrives afterwards', async (t) => {
  const s = await setup(t, 0.5)
  let m = await spawnMachine(s.opts)
  t.teardown(() => m.crash())
  await s.fglab.waitFor(() => s.fglab.projects.size === 1, 20_000, 'registration')
  const ids = [objectId(), objectId()]
  for (const [n, id] of ids.entries()) t.equal((await s.submit(m.url, { n, _id: id })).status, 200)
  await s.fglab.waitFor(() => ids.every((id) => s.fglab.experiment(id).started === 1), 30_000, 'started')
  const downAt = Date.now()
  s.fglab.failWith(503)
  for (const id of ids) s.release(id)
  // Both end while FGLab is down; their reports wait in the outbox on disk.
  await s.fglab.waitFor(() => m.lines.filter((l) => l.msg === 'experiment ended').length === 2, 30_000, 'both to end')
  await s.fglab.waitFor(() => m.lines.some((l) => l.msg === 'report to FGLab failed; will retry'), 10_000, 'a retry')
  await m.crash()
  t.ok(existsSync(path.join(s.opts.dataDir, 'outbox')), 'the outbox is on disk')
  m = await spawnMachine(s.opts)
  await new Promise((r) => setTimeout(r, Math.max(0, 15_000 - (Date.now() - downAt))))
  t.notOk(ids.some((id) => s.fglab.experiment(id).finished > 0), 'nothing got through while FGLab was down')
  s.fglab.recover()
  await s.fglab.waitFinished(ids, 60_000)
  for (const [n, id] of ids.entries()) {
    const e = s.fglab.experiment(id)
    t.equal(e.fields._status, 'success')
    t.same(e.fields._scores, { n })
    t.equal(e.fields._notes, `ended ${n}`)
  }
  await s.fglab.waitFor(() => readdirSync(s.results).length === 0, 10_000, 'results folders removed once acknowledged')
  const journal = () => readdirSync(path.join(s.opts.dataDir, 'experiments')).filter((f) => f.endsWith('.json'))
  // The record goes right after the folder: wait for it rather than race it.
  await s.fglab.waitFor(() => journal().length === 0, 10_000, 'the journal to empty').catch(() => undefined)
  t.same(journal(), [], 'journal empty')
})

t.test('docker stop (SIGTERM) leaves containers running; the next start takes them up, full from its first answer', async (t) => {
  const s = await setup(t, 0.5)
  let m = await spawnMachine(s.opts)
  t.teardown(() => m.crash())
  await s.fglab.waitFor(() => s.fglab.projects.size === 1, 20_000, 'registration')
  const ids = [objectId(), objectId()]
  for (const [n, id] of ids.entries()) await s.submit(m.url, { n, _id: id })
  await s.fglab.waitFor(() => ids.every((id) => s.fglab.experiment(id).started === 1), 30_000, 'started')
  t.equal(await m.stop(), 0, 'exits cleanly')
  t.same(ids.map(s.containerState), ['running', 'running'])
  t.equal(s.fglab.experiment(ids[0]!).finished, 0, 'not reported as ended')
  m = await spawnMachine(s.opts)
  const res = await fetch(`${m.url}/projects/p/capacity`)
  t.equal(res.status, 501, 'a full machine says 501 right after the restart')
  for (const id of ids) s.release(id)
  await s.fglab.waitFinished(ids, 30_000)
  for (const id of ids) t.equal(s.fglab.experiment(id).fields._status, 'success')
  t.equal(await s.capacity(m.url), 2, 'and its capacity comes back when they end')
})

t.test('an experiment FGLab sent that never got a container is reported fail after a restart', async (t) => {
  const s = await setup(t, 0.5)
  const id = objectId()
  const { mkdirSync } = await import('node:fs')
  mkdirSync(path.join(s.opts.dataDir, 'experiments'), { recursive: true })
  // As the journal stands when FGMachine dies between accepting an experiment and creating its container.
  const record = { id, projectId: 'p', runtime: 'docker', resultsDir: path.join(s.results, id), keepResults: false, lease: { experimentId: id, projectId: 'p', cpuUnits: 500000, gpus: [] }, phase: 'accepted' }
  writeFileSync(path.join(s.opts.dataDir, 'experiments', `${id}.json`), JSON.stringify(record))
  const m = await spawnMachine(s.opts)
  t.teardown(() => m.crash())
  await s.fglab.waitFinished([id], 30_000)
  const e = s.fglab.experiment(id)
  t.equal(e.fields._status, 'fail')
  t.match(e.fields.reason, /FGMachine stopped before the experiment got a container/)
  t.equal(e.started, 0, 'never reported started')
  t.equal(await s.capacity(m.url), 2, 'its reservation is released')
})

t.test('a local experiment cannot outlive FGMachine: after a crash it is ended and reported fail, its results still sent', async (t) => {
  const s = await setup(t, 0.5)
  const script = 'echo "{\\"_scores\\": {\\"x\\": 1}}" > "$FGLAB_RESULTS_DIR/s.json"; echo $$ > "$FGLAB_RESULTS_DIR/pid.txt"; sleep 60'
  writeFileSync(s.opts.projectsPath, JSON.stringify({ p: { command: 'sh', args: ['-c', script], capacity: 0.5, results: s.results } }))
  let m = await spawnMachine(s.opts)
  t.teardown(() => m.crash())
  await s.fglab.waitFor(() => s.fglab.projects.size === 1, 20_000, 'registration')
  const id = objectId()
  await s.submit(m.url, { _id: id })
  const pidFile = path.join(s.results, id, 'pid.txt')
  await s.fglab.waitFor(() => existsSync(pidFile) && s.fglab.experiment(id).started === 1, 20_000, 'started')
  const { readFileSync } = await import('node:fs')
  const pid = Number(readFileSync(pidFile, 'utf8'))
  await m.crash()
  const alive = (p: number) => {
    try {
      process.kill(p, 0)
      return true
    } catch {
      return false
    }
  }
  t.ok(alive(pid), 'it outlived the crash (its own process group)')
  m = await spawnMachine(s.opts)
  await s.fglab.waitFinished([id], 30_000)
  const e = s.fglab.experiment(id)
  t.equal(e.fields._status, 'fail')
  t.match(e.fields.reason, /local processes end with FGMachine/)
  t.same(e.fields._scores, { x: 1 }, 'its results folder was still swept and sent')
  await s.fglab.waitFor(() => !alive(pid), 5000, 'the process to be gone')
  t.notOk(alive(pid), 'and it is ended')
})

t.test('labels are the truth: with its journal lost, a running container is taken up from its labels alone', async (t) => {
  const s = await setup(t, 0.5)
  let m = await spawnMachine(s.opts)
  t.teardown(() => m.crash())
  await s.fglab.waitFor(() => s.fglab.projects.size === 1, 20_000, 'registration')
  const id = objectId()
  await s.submit(m.url, { n: 7, _id: id })
  await s.fglab.waitFor(() => s.fglab.experiment(id).started === 1, 30_000, 'started')
  await m.crash()
  rmSync(path.join(s.opts.dataDir, 'experiments'), { recursive: true, force: true })
  rmSync(path.join(s.opts.dataDir, 'outbox'), { recursive: true, force: true })
  m = await spawnMachine(s.opts)
  await s.fglab.waitFor(() => m.lines.some((l) => l.msg === 'taking up a container of this machine from its labels (no journal record)'), 20_000, 'adoption')
  t.equal(await s.capacity(m.url), 1, 'its half of the machine is held again')
  s.release(id)
  await s.fglab.waitFinished([id], 30_000)
  const e = s.fglab.experiment(id)
  t.equal(e.fields._status, 'success')
  t.equal(e.fields._notes, 'ended 7')
  t.equal(s.containerState(id), '', 'removed once reported')
})

t.test('docker stop while FGMachine is still starting (a hung nvidia-smi) ends it at once and cleanly', async (t) => {
  const { dir, opts } = await setup(t, 1)
  // A stand-in nvidia-smi that says it was asked, then hangs: discovery waits up to 10 s for it.
  const bin = path.join(dir, 'bin')
  const asked = path.join(dir, 'asked')
  const { mkdirSync, chmodSync } = await import('node:fs')
  mkdirSync(bin)
  writeFileSync(path.join(bin, 'nvidia-smi'), `#!/bin/sh\ntouch '${asked}'\nexec sleep 600\n`)
  chmodSync(path.join(bin, 'nvidia-smi'), 0o755)
  const m = await spawnMachine({ ...opts, noWait: true, env: { PATH: `${bin}:${process.env.PATH}`, FGMACHINE_GPUS: '' } })
  t.teardown(() => m.crash())
  const { setTimeout: delay } = await import('node:timers/promises')
  for (let i = 0; i < 300 && !existsSync(asked); i++) await delay(50)
  t.ok(existsSync(asked), 'FGMachine is in GPU discovery')
  t.equal(await m.stop(), 0, 'SIGTERM ends it with 0')
  t.notOk(m.lines.some((l) => /GPU discovery failed/.test(String(l.msg))), 'before discovery gave up: the signal was not left waiting')
  t.ok(m.lines.some((l) => l.signal === 'SIGTERM'), 'and it said why it stopped')
})

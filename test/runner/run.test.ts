import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import type { FakeContainer, FakeContainerClient } from '../helpers/fake-container-client.js'
import { Metrics } from '../../src/metrics.js'
import { SystemCharts, type WatchTarget } from '../../src/sysstats/charts.js'
import { nodeDisk } from '../../src/util/disk.js'
import { objectId } from '../helpers/ids.js'
import { parseExposition, sumOf } from '../helpers/prometheus.js'
import { runnerRig, type RunnerRig } from '../helpers/runner-rig.js'
import { TestClock } from '../helpers/test-clock.js'

/** A program that writes its scores and a log file, prints a line, then exits with `code`. */
function trainer(code = 0) {
  return (c: FakeContainer, engine: FakeContainerClient) => {
    const dir = c.spec.env.find((e) => e.startsWith('FGLAB_RESULTS_DIR='))!.slice('FGLAB_RESULTS_DIR='.length)
    writeFileSync(path.join(dir, 'scores.json'), JSON.stringify({ _scores: { acc: 0.9 } }))
    writeFileSync(path.join(dir, 'run.log'), 'epoch 1\n')
    engine.write(c, 'stdout', 'epoch 1\n')
    engine.exit(c, code)
  }
}

/** A program that waits until the test ends it. */
const waiting = () => {}

/** A rig with one experiment running a program that waits for the test, FGLab told it started. */
async function running(t: Test, opts: { clock?: TestClock; boot?: Parameters<RunnerRig['boot']>[0]; project?: Record<string, unknown> } = {}) {
  const r = await runnerRig(t, { clock: opts.clock })
  r.docker.program = waiting
  const m = await r.boot(opts.boot)
  const id = objectId()
  await m.manager.start('p', { _id: id }, r.project(opts.project))
  await r.fglab.waitFor(() => r.fglab.experiment(id).started === 1, 5000, 'started')
  return { r, m, id }
}

const ledgerFiles = (r: RunnerRig) => (existsSync(path.join(r.dataDir, 'experiments')) ? readdirSync(path.join(r.dataDir, 'experiments')) : [])
const queueFiles = (r: RunnerRig) => (existsSync(path.join(r.dataDir, 'outbox')) ? readdirSync(path.join(r.dataDir, 'outbox')) : [])

const ledgerSays = (r: RunnerRig, id: string) => {
  const file = path.join(r.dataDir, 'experiments', `${id}.ledger.jsonl`)
  return existsSync(file) ? readFileSync(file, 'utf8') : ''
}

async function settled(r: RunnerRig, id: string) {
  await r.fglab.waitFinished([id], 20_000)
  await r.fglab.waitFor(() => ledgerFiles(r).length === 0 && queueFiles(r).length === 0, 10_000, 'the journal, ledgers and queue to empty')
}

t.test('a fresh run: started, results, how it ended, status, finished, in that order; then nothing is left', async (t) => {
  const r = await runnerRig(t)
  r.docker.program = trainer(0)
  const m = await r.boot()
  const id = objectId()
  await m.manager.start('p', { _id: id, lr: 0.1 }, r.project())
  await settled(r, id)
  const e = r.fglab.experiment(id)
  t.equal(e.calls[0], 'started')
  t.same(e.calls.slice(-3), ['update', 'update', 'finished'], 'summary, status, finished last')
  t.same(e.fields._scores, { acc: 0.9 })
  t.equal(e.files.get('run.log')?.data?.toString(), 'epoch 1\n')
  t.equal(e.fields._status, 'success')
  t.match(e.fields, { exit_code: 0, FGMachine: /^success: exit code 0, ran / })
  t.equal(e.fields.reason, undefined, 'no failure reason')
  t.equal(e.fields.FGMachine_results, undefined, 'no problems to tell')
  t.notOk(existsSync(path.join(r.resultsDir, id)), 'results folder removed')
  t.equal(r.docker.containers.size, 0, 'container removed')
  t.equal(m.scheduler.leases().length, 0, 'capacity released')
  const c = r.docker.calls
  t.ok(c.indexOf('attach') < c.indexOf('start'), 'output attached before the start')
  t.notOk(c.includes('ensureImage'), 'the image is here: created at once, not asked for first')
})

t.test('an image not on the host: the create says so, the image is pulled, and the create made again (as the docker CLI does)', async (t) => {
  const r = await runnerRig(t)
  r.docker.program = trainer(0)
  const m = await r.boot()
  const id = objectId()
  await m.manager.start('p', { _id: id }, r.project({ image: 'fake/new:1' }))
  await r.fglab.waitFinished([id])
  t.equal(r.fglab.experiment(id).fields._status, 'success')
  t.equal(r.docker.pulls.get('fake/new:1'), 1, 'pulled once')
  t.same(r.docker.calls.filter((x) => ['create', 'ensureImage', 'start'].includes(x)), ['create', 'ensureImage', 'create', 'start'])
  // pull: always pulls first, every time.
  const again = objectId()
  await m.manager.start('p', { _id: again }, r.project({ image: 'fake/new:1', pull: 'always' }))
  await r.fglab.waitFinished([again])
  t.equal(r.docker.pulls.get('fake/new:1'), 2)
})

t.test('a launch that fails is "failed to start"; a bookkeeping failure after the launch is not', async (t) => {
  const r = await runnerRig(t)
  r.docker.program = waiting
  const m = await r.boot()
  const bad = objectId()
  r.docker.failNext('start')
  await m.manager.start('p', { _id: bad }, r.project())
  await r.fglab.waitFinished([bad])
  t.notOk('exit_code' in r.fglab.experiment(bad).fields, 'no exit code: it never ran')
  t.match(r.fglab.experiment(bad).fields, { reason: /^failed to start: start failed/ })
  t.equal(r.fglab.experiment(bad).started, 0)
  t.equal(r.docker.containers.size, 0, 'the container that could not start is removed')

  // The disk refuses the "launched" record once: the program runs on, followed, never "failed to start".
  const good = objectId()
  let refused = 0
  const write = m.disk.writeAtomic
  m.disk.writeAtomic = (file, data) => (data.includes('"launched"') && refused++ === 0 ? Promise.reject(new Error('ENOSPC (test)')) : write(file, data))
  await m.manager.start('p', { _id: good }, r.project())
  await r.fglab.waitFor(() => r.fglab.experiment(good).started === 1, 10_000, 'started')
  t.equal(refused, 2, 'the record was written on the second try')
  const c = r.docker.byExperiment(good)!
  t.equal(c.status, 'running', 'the container was left running')
  r.docker.exit(c, 0)
  await r.fglab.waitFinished([good])
  t.equal(r.fglab.experiment(good).fields._status, 'success')
  t.ok(m.logs.find("cannot write the experiment's record; trying again"))
})

t.test('a pull that fails fails the experiment with Docker\'s reason, with no container', async (t) => {
  const r = await runnerRig(t)
  r.docker.pullError.set('fake/missing:1', 'write /var/lib/docker/tmp/x: no space left on device')
  const m = await r.boot()
  const id = objectId()
  await m.manager.start('p', { _id: id }, r.project({ image: 'fake/missing:1' }))
  await r.fglab.waitFinished([id])
  t.match(r.fglab.experiment(id).fields, { reason: /failed to start: cannot pull image fake\/missing:1: .*no space left on device/ })
  t.equal(r.docker.containers.size, 0)
})

t.test('resume, from each phase', async (t) => {
  t.test('accepted, no container: fail, "never got a container"', async (t) => {
    const r = await runnerRig(t)
    r.docker.program = waiting
    let m = await r.boot()
    const id = objectId()
    r.docker.down = true // the launch cannot get anywhere before the crash
    await m.manager.start('p', { _id: id }, r.project())
    await m.crash()
    r.docker.down = false
    r.docker.containers.clear()
    m = await r.boot()
    t.equal(m.scheduler.leases().length, 1, 'its lease is held again at once')
    await settled(r, id)
    t.match(r.fglab.experiment(id).fields, { reason: 'FGMachine stopped before the experiment got a container' })
    t.equal(r.fglab.experiment(id).started, 0)
    t.equal(m.scheduler.leases().length, 0)
  })

  t.test('accepted, a container created but never started: fail, and the container goes', async (t) => {
    const r = await runnerRig(t)
    const m = await r.boot()
    const id = objectId()
    const first = m
    // kill -9 between the container's creation and its start.
    r.docker.onCall = (op) => {
      if (op !== 'start') return
      r.docker.onCall = () => {}
      void first.crash()
      throw new Error('the process is gone')
    }
    await m.manager.start('p', { _id: id }, r.project())
    await r.fglab.waitFor(() => first.disk.dead, 5000, 'the crash')
    t.equal(r.docker.byExperiment(id)?.status, 'created')
    await r.boot()
    await settled(r, id)
    t.match(r.fglab.experiment(id).fields, { reason: 'FGMachine stopped before the experiment started' })
    t.equal(r.docker.containers.size, 0)
  })

  t.test('launched and still running: followed to its end, never started again', async (t) => {
    const s = await running(t)
    const { r, id } = s
    let m = s.m
    const c = r.docker.byExperiment(id)!
    r.docker.write(c, 'stdout', 'before the crash\n')
    // Once the ledger has it, "started" is not sent again.
    await r.fglab.waitFor(() => ledgerSays(r, id).includes('"started"'), 5000, 'started in the ledger')
    await m.crash()
    m = await r.boot()
    t.equal(m.manager.get(id)?.state, 'running')
    const backlog = () => m.logHub.backlog(id).map((x) => x.text).join('')
    await r.fglab.waitFor(() => backlog().includes('before the crash'), 5000, 'its recent output read back')
    r.docker.write(c, 'stdout', 'after\n')
    r.docker.exit(c, 0)
    await settled(r, id)
    t.equal(r.fglab.experiment(id).fields._status, 'success')
    t.equal(r.docker.calls.filter((x) => x === 'create').length, 1, 'created once')
    t.equal(r.fglab.experiment(id).started, 1, 'started reported once (the ledger knew)')
  })

  t.test('launched, ended while FGMachine was down: its exit code is reported', async (t) => {
    const { r, m, id } = await running(t)
    await m.crash()
    r.docker.exit(r.docker.byExperiment(id)!, 3)
    await r.boot()
    await settled(r, id)
    t.match(r.fglab.experiment(id).fields, { exit_code: 3, reason: 'exit code 3', FGMachine: /^fail: exit code 3/ })
    t.equal(r.docker.containers.size, 0)
  })

  t.test('launched, container gone: fail, with the reason', async (t) => {
    const { r, m, id } = await running(t)
    await m.crash()
    r.docker.containers.clear()
    await r.boot()
    await settled(r, id)
    t.match(r.fglab.experiment(id).fields, { reason: /its container is gone/ })
  })

  t.test('Docker unreachable during the resume: it waits for Docker, then carries on', async (t) => {
    const s = await running(t)
    const { r, id } = s
    let m = s.m
    await m.crash()
    r.docker.down = true
    m = await r.boot()
    await r.fglab.waitFor(() => m.logs.find("cannot look for the experiment's container; trying again") !== undefined, 5000, 'the retry')
    t.equal(m.scheduler.leases().length, 1, 'its capacity stays held meanwhile')
    r.docker.down = false
    await r.fglab.waitFor(() => m.manager.get(id)?.state === 'running', 5000, 'followed again')
    r.docker.exit(r.docker.byExperiment(id)!, 0)
    await settled(r, id)
    t.equal(r.fglab.experiment(id).fields._status, 'success')
  })
})

t.test('killed, then FGMachine restarts before it ends: still reported fail, killed', async (t) => {
  const { r, m, id } = await running(t)
  r.docker.ignoreStop = true // the program takes its time to save
  m.manager.kill(id)
  await r.fglab.waitFor(() => r.docker.byExperiment(id)!.stopSignals === 1, 5000, 'the stop')
  await m.crash()
  await r.boot()
  await r.fglab.waitFor(() => r.docker.byExperiment(id)!.stopSignals === 2, 5000, 'stopped again after the restart')
  r.docker.exit(r.docker.byExperiment(id)!, 0) // it saved and exited 0
  await settled(r, id)
  t.equal(r.fglab.experiment(id).fields._status, 'fail', 'a killed experiment never ends success')
  t.match(r.fglab.experiment(id).fields, { killed: true })
})

t.test('a timeout counts from the launch: a restart does not give it more time', async (t) => {
  const clock = new TestClock({ auto: false })
  const { r, m, id } = await running(t, { clock, project: { timeout: 3600 } })
  clock.advance(50 * 60_000)
  await m.crash()
  clock.sleeps.length = 0
  await r.boot()
  await r.fglab.waitFor(() => clock.sleeps.includes(10 * 60_000), 5000, 'the timeout armed again')
  t.notOk(clock.sleeps.includes(3600_000), 'not a whole hour again')
  const c = r.docker.byExperiment(id)!
  clock.advance(10 * 60_000 - 1)
  await new Promise((res) => setTimeout(res, 50))
  t.equal(c.stopSignals, 0, 'not a moment early')
  clock.advance(1)
  await r.fglab.waitFor(() => c.stopSignals === 1, 5000, 'stopped at its time')
  // The rest of the run takes no time of its own.
  clock.auto = true
  clock.advance(0)
  await settled(r, id)
  t.match(r.fglab.experiment(id).fields, { timed_out: true, reason: 'timed out after 3600 s' })
  t.equal(r.fglab.experiment(id).fields._status, 'fail')
})

t.test('a file FGLab does not get keeps the folder, also across a restart', async (t) => {
  const s = await running(t, { boot: { maxFileBytes: 100 } })
  const { r, id } = s
  let m = s.m
  const dir = path.join(r.resultsDir, id)
  writeFileSync(path.join(dir, 'model.ckpt'), Buffer.alloc(1000))
  await r.fglab.waitFor(() => m.logs.find(/results file too large to send/) !== undefined, 5000, 'the refusal')
  await m.crash()
  m = await r.boot({ maxFileBytes: 100 })
  r.docker.exit(r.docker.byExperiment(id)!, 0)
  await settled(r, id)
  t.ok(existsSync(path.join(dir, 'model.ckpt')), 'the folder and the file are kept')
  t.match(r.fglab.experiment(id).fields.FGMachine_results, /^model\.ckpt: not sent: 0\.0 MiB, more than FGMACHINE_MAX_FILE_MB/)
  t.equal(r.fglab.experiment(id).fields._status, 'success', 'and the status still arrives')
})

t.test('a file sent before a restart is not sent again; a changed one is', async (t) => {
  const { r, m, id } = await running(t)
  const dir = path.join(r.resultsDir, id)
  writeFileSync(path.join(dir, 'a.txt'), 'one')
  writeFileSync(path.join(dir, 'b.txt'), 'one')
  await r.fglab.waitFor(() => r.fglab.experiment(id).files.size === 2, 5000, 'both sent')
  // Crashed once the ledger has both: FGLab's answer to the last upload is not lost with it.
  await r.fglab.waitFor(() => ['a.txt', 'b.txt'].every((f) => ledgerSays(r, id).includes(`"file:${f}"`)), 5000, 'both in the ledger')
  await m.crash()
  writeFileSync(path.join(dir, 'b.txt'), 'two, longer')
  await r.boot()
  r.docker.exit(r.docker.byExperiment(id)!, 0)
  await settled(r, id)
  const uploads = r.fglab.calls.filter((c) => c.files).flatMap((c) => c.files!.map((f) => f.name))
  t.same(uploads.filter((n) => n === 'a.txt').length, 1, 'a.txt once')
  t.same(uploads.filter((n) => n === 'b.txt').length, 2, 'b.txt again, changed')
  t.equal(r.fglab.experiment(id).files.get('b.txt')?.data?.toString(), 'two, longer')
})

t.test('labels are the truth: a running container of this machine with no record is taken up from its labels', async (t) => {
  const s = await running(t)
  const { r, id } = s
  let m = s.m
  await m.crash()
  rmSync(r.dataDir, { recursive: true })
  m = await r.boot()
  await m.reconciled
  t.ok(m.logs.find('taking up a container of this machine from its labels (no journal record)'))
  t.same(m.scheduler.leases().map((l) => l.experimentId), [id])
  r.docker.exit(r.docker.byExperiment(id)!, 0)
  await settled(r, id)
  t.equal(r.fglab.experiment(id).fields._status, 'success')
  t.equal(r.docker.byExperiment(id)?.spec.labels['fgmachine.machine'], undefined, 'and removed once reported')
})

t.test("a run taken up after a restart keeps its memory limit on its system chart: read from its container, as a run taken up from its labels has no project", async (t) => {
  const r = await runnerRig(t)
  r.docker.program = waiting
  const watched: WatchTarget[] = []
  class Watched extends SystemCharts {
    override watch(target: WatchTarget): void {
      watched.push(target)
    }
  }
  const system = () => new Watched({ dir: path.join(r.dataDir, 'experiments'), disk: nodeDisk, log: pino({ level: 'silent' }), clock: r.clock, sampleMs: 5000, chartEveryMs: 0 })
  let m = await r.boot({ system: system() })
  const id = objectId()
  await m.manager.start('p', { _id: id }, r.project({ memory: '2g' }))
  await r.fglab.waitFor(() => watched.length === 1, 5000, 'watched at the start')
  t.equal(watched[0]!.memoryLimitBytes, 2 * 2 ** 30, "at the start: the project's")
  for (const labelsOnly of [false, true]) {
    await m.crash()
    if (labelsOnly) rmSync(r.dataDir, { recursive: true })
    m = await r.boot({ system: system() })
    await m.reconciled
    await r.fglab.waitFor(() => watched.length === (labelsOnly ? 3 : 2), 5000, 'watched again once taken up')
    t.equal(watched.at(-1)!.memoryLimitBytes, 2 * 2 ** 30, labelsOnly ? 'taken up from its labels alone' : 'taken up from its record')
  }
  r.docker.exit(r.docker.byExperiment(id)!, 0)
  await settled(r, id)
})

t.test('a crash at any write: after the restart the experiment ends right, every result delivered, nothing left', async (t) => {
  // How many writes a whole run makes, counted once without a crash.
  const count = await runnerRig(t)
  count.docker.program = trainer(0)
  const plain = await count.boot()
  const first = objectId()
  await plain.manager.start('p', { _id: first }, count.project())
  await settled(count, first)
  const writes = plain.disk.writes.length
  t.ok(writes >= 8, `a run makes ${writes} writes`)

  for (let at = 1; at <= writes; at++) {
    await t.test(`crash at write ${at}`, async (t) => {
      const r = await runnerRig(t)
      r.docker.program = trainer(at % 2)
      let m = await r.boot({ crashAt: at })
      const id = objectId()
      const accepted = await m.manager.start('p', { _id: id }, r.project()).then(
        () => true,
        () => false, // the crash took the record of its acceptance: FGLab was answered 500
      )
      const crashedAt = m.disk.writes[at - 1] ?? ''
      await r.fglab.waitFor(() => m.disk.dead || (r.fglab.experiment(id).finished > 0 && ledgerFiles(r).length === 0), 10_000, 'the crash')
      await m.crash()
      m = await r.boot()
      if (!accepted) {
        t.equal(r.fglab.experiment(id).calls.length, 0, 'an experiment never accepted is never reported')
        t.equal(r.docker.containers.size, 0)
        return
      }
      await settled(r, id)
      const e = r.fglab.experiment(id)
      t.equal(e.fields._status, at % 2 === 0 ? 'success' : 'fail', `status right (crashed at ${crashedAt})`)
      t.same(e.fields._scores, { acc: 0.9 })
      t.equal(e.files.get('run.log')?.data?.toString(), 'epoch 1\n')
      t.ok(e.finished >= 1 && e.finished <= 2, `finished sent once, or twice when the crash took its record (${e.finished})`)
      t.ok(e.started <= 2, 'started at most twice')
      t.notOk(existsSync(path.join(r.resultsDir, id)), 'results folder removed')
      t.equal(r.docker.containers.size, 0, 'container removed')
      t.equal(m.scheduler.leases().length, 0, 'capacity released')
    })
  }
})

t.test('a full disk: experiments are kept (and say so), a restart still starts, and all is caught up once there is room', async (t) => {
  const s = await running(t)
  const { r, id } = s
  let m = s.m
  m.disk.full = true
  writeFileSync(path.join(r.resultsDir, id, 'notes.txt'), 'written while the disk was full')
  r.docker.exit(r.docker.byExperiment(id)!, 0)
  await r.fglab.waitFor(() => m.logs.find("cannot write the experiment's record; trying again") !== undefined, 5000, 'the complaint')
  t.equal(m.scheduler.leases().length, 1, 'its capacity stays held until its end is written down')
  await t.rejects(m.manager.start('p', { _id: objectId() }, r.project()), /ENOSPC/, 'a new experiment cannot be written down: refused')
  await m.crash()
  m = await r.boot({ full: true })
  t.ok(m.manager.get(id), 'a restart on a full disk starts, and takes the experiment up')
  await r.fglab.waitFor(() => m.logs.find("cannot write the experiment's record; trying again") !== undefined, 5000, 'the complaint again')
  m.disk.full = false
  await settled(r, id)
  t.equal(r.fglab.experiment(id).fields._status, 'success')
  t.equal(r.fglab.experiment(id).files.get('notes.txt')?.data?.toString(), 'written while the disk was full')
  t.notOk(existsSync(path.join(r.resultsDir, id)))
})

t.test('the data folder holds nothing stray once runs are done', async (t) => {
  const r = await runnerRig(t)
  r.docker.program = trainer(0)
  const m = await r.boot()
  const ids = [objectId(), objectId()]
  for (const id of ids) await m.manager.start('p', { _id: id }, r.project({ capacity: 0.1 }))
  for (const id of ids) await settled(r, id)
  mkdirSync(r.dataDir, { recursive: true })
  t.same(ledgerFiles(r), [])
  t.same(queueFiles(r), [])
})

t.test('metrics: started, running, ended by how, durations; a run taken up after a restart counts as running there', async (t) => {
  const r = await runnerRig(t)
  r.docker.program = waiting
  const metrics = new Metrics({ processMetrics: false })
  const read = async () => parseExposition(await metrics.registry.metrics()).samples
  const m = await r.boot({ metrics })
  const [a, b, c] = [objectId(), objectId(), objectId()]
  for (const id of [a, b]) await m.manager.start('p', { _id: id }, r.project({ capacity: 0.25 }))
  await r.fglab.waitFor(() => r.fglab.experiment(a).started === 1 && r.fglab.experiment(b).started === 1, 5000, 'both started')
  let s = await read()
  t.equal(sumOf(s, 'fgmachine_experiments_started_total'), 2)
  t.equal(sumOf(s, 'fgmachine_experiments_running'), 2)
  t.equal(sumOf(s, 'fgmachine_container_start_seconds_count'), 2)
  t.equal(sumOf(s, 'fgmachine_submit_to_running_seconds_count'), 2)
  r.docker.exit(r.docker.byExperiment(a)!, 0)
  await r.fglab.waitFinished([a], 5000)
  m.manager.kill(b)
  await r.fglab.waitFinished([b], 5000)
  s = await read()
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'success', reason: 'none' }), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'fail', reason: 'killed' }), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_running'), 0)
  t.equal(sumOf(s, 'fgmachine_experiment_duration_seconds_count'), 2)

  // One left running through a restart: the new process counts it running, not started again.
  await m.manager.start('p', { _id: c }, r.project({ capacity: 0.25 }))
  await r.fglab.waitFor(() => r.fglab.experiment(c).started === 1, 5000, 'c started')
  await m.crash()
  const after = new Metrics({ processMetrics: false })
  await r.boot({ metrics: after })
  // Taken up in the background: awaited, with a deadline.
  const deadline = Date.now() + 5000
  while ((await after.experimentsRunning.get()).values[0]?.value !== 1 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5))
  s = parseExposition(await after.registry.metrics()).samples
  t.equal(sumOf(s, 'fgmachine_experiments_running'), 1, 'taken up: running')
  t.equal(sumOf(s, 'fgmachine_experiments_started_total'), 0, 'not started again')
  r.docker.exit(r.docker.byExperiment(c)!, 2)
  await r.fglab.waitFinished([c], 5000)
  s = parseExposition(await after.registry.metrics()).samples
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'fail', reason: 'exit_code' }), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_running'), 0)
})

import { existsSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import t from 'tap'
import { dockerAvailable, ensureBusyboxImage, ensureEntrypointImage } from '../helpers/images.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

const sh = (script: string, capacity: number, results: string, extra: Record<string, unknown> = {}) => ({
  image,
  command: 'sh',
  args: ['-c', script, 'exp'],
  capacity,
  results,
  ...extra,
})

function containersOf(h: Harness): string[] {
  const out = execFileSync('docker', ['ps', '-aq', '--filter', `label=fgmachine.machine=${h.machine.registration.machineId}`], { encoding: 'utf8' })
  return out.split('\n').filter(Boolean)
}

t.test('a failing program is reported fail with its exit code; its results still arrive', async (t) => {
  const h = await startHarness({
    projects: (r) => ({ p: sh('echo \'{"_scores": {"acc": 0.1}}\' > "$FGLAB_RESULTS_DIR/s.json"; echo oops >&2; exit 3', 1, r) }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  t.equal((await h.submit('p', { _id: id })).status, 200)
  await h.fglab.waitFinished([id])
  const e = h.fglab.experiment(id)
  t.equal(e.fields._status, 'fail')
  t.match(e.fields, { exit_code: 3, reason: 'exit code 3', FGMachine: /^fail: exit code 3 \(ran / })
  t.same(e.fields._scores, { acc: 0.1 })
  await h.machine.experiments.idle()
  t.same(containersOf(h), [], 'its container is removed')
})

t.test('kill stops the container and the experiment ends fail', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: sh('echo started; sleep 60', 1, r) }) })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await h.fglab.waitFor(() => h.fglab.experiment(id).started === 1, 20_000, 'started')
  t.equal((await h.capacity('p')).status, 501, 'a full machine says 501')
  const res = await fetch(`${h.url}/experiments/${id}/kill`, { method: 'POST', headers: { origin: 'http://fglab:5080' } })
  t.equal(res.status, 200)
  t.same(await res.json(), { status: 'killed' })
  t.equal(res.headers.get('access-control-allow-origin'), '*')
  await h.fglab.waitFinished([id], 20_000)
  const e = h.fglab.experiment(id)
  t.equal(e.fields._status, 'fail')
  t.equal(e.fields.killed, true)
  await h.machine.experiments.idle()
  t.same(containersOf(h), [], 'its container is removed')
  t.equal((await h.capacity('p')).status, 200, 'capacity is back')
})

t.test('40 simultaneous starts of a capacity 0.1 project admit exactly 10', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: sh('sleep 1', 0.1, r) }) })
  t.teardown(() => h.close())
  const ids = Array.from({ length: 40 }, objectId)
  const answers = await Promise.all(ids.map((id) => h.submit('p', { _id: id })))
  const ok = answers.filter((a) => a.status === 200)
  const refused = answers.filter((a) => a.status === 501)
  t.equal(ok.length, 10)
  t.equal(refused.length, 30)
  t.match(refused[0]?.body, { error: 'No capacity available', cause: 'full', reason: /^busy: 10 experiment\(s\) hold this machine's capacity \(machine 100% in use\); project p needs 10% of the machine$/ })
  const admitted = ids.filter((_, i) => answers[i]!.status === 200)
  await h.fglab.waitFinished(admitted, 60_000)
  t.ok(admitted.every((id) => h.fglab.experiment(id).fields._status === 'success'))
  t.equal(ids.filter((id) => h.fglab.experiments.has(id)).length, 10, 'FGLab hears of the admitted ones only')
  await h.machine.experiments.idle()
  t.equal((await h.capacity('p')).body.capacity, 10, 'all capacity returns')
})

t.test('a start that cannot run (missing image) releases its reservation and reports fail', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: { ...sh('true', 1, r), image: 'fgmachine-test/does-not-exist:nope' } }) })
  t.teardown(() => h.close())
  const id = objectId()
  t.equal((await h.submit('p', { _id: id })).status, 200)
  await h.fglab.waitFinished([id], 30_000)
  const e = h.fglab.experiment(id)
  t.equal(e.fields._status, 'fail')
  t.match(e.fields.reason, /failed to start: .*does-not-exist/)
  t.equal(e.started, 0, 'never reported started')
  await h.machine.experiments.idle()
  t.equal((await h.capacity('p')).body.capacity, 1)
  t.same(containersOf(h), [])
  const stderr = h.machine.logHub.backlog(id).filter((c) => c.stream === 'stderr').map((c) => c.text).join('')
  t.match(stderr, /failed to start/, 'the reason is in the live log')
})

t.test('every result of 40 experiments that write and exit at once arrives, 10 at a time', async (t) => {
  const script = 'd="$FGLAB_RESULTS_DIR"; echo "{\\"_scores\\": {\\"n\\": $2}}" > "$d/scores.json"; echo "log $2" > "$d/run.log"'
  const h = await startHarness({ projects: (r) => ({ p: sh(script, 0.1, r, { options: 'plain' }) }) })
  t.teardown(() => h.close())
  const ids: string[] = []
  for (let batch = 0; batch < 4; batch++) {
    const these = Array.from({ length: 10 }, objectId)
    ids.push(...these)
    const answers = await Promise.all(these.map((id, i) => h.submit('p', { n: batch * 10 + i, _id: id })))
    t.ok(answers.every((a) => a.status === 200), `batch ${batch} admitted`)
    await h.fglab.waitFinished(these, 60_000)
    await h.machine.experiments.idle()
  }
  ids.forEach((id, n) => {
    const e = h.fglab.experiment(id)
    t.equal(e.fields._status, 'success')
    t.same(e.fields._scores, { n }, `scores of ${n}`)
    t.equal(e.files.get('run.log')?.data?.toString(), `log ${n}\n`, `file of ${n}`)
  })
  t.notOk(ids.some((id) => existsSync(`${h.resultsDir}/${id}`)), 'all results folders removed')
})

t.test('keep_results keeps the folder', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: sh('echo hi > "$FGLAB_RESULTS_DIR/a.txt"', 1, r, { keep_results: true }) }) })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await h.fglab.waitFinished([id])
  await h.machine.experiments.idle()
  t.ok(existsSync(`${h.resultsDir}/${id}/a.txt`))
  t.equal(h.fglab.experiment(id).files.get('a.txt')?.data?.toString(), 'hi\n')
})

t.test('container settings: env, FGLAB_* variables, working directory, shm_size, labels', async (t) => {
  const script = 'env | sort > "$FGLAB_RESULTS_DIR/env.txt"; pwd > "$FGLAB_RESULTS_DIR/pwd.txt"; sleep 2'
  const h = await startHarness({
    projects: (r) => ({ p: sh(script, 1, r, { env: { LR: 0.5, NAME: 'x y' }, cwd: '/tmp', shm_size: '256m', memory: '128m' }) }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await h.fglab.waitFor(() => h.fglab.experiment(id).started === 1, 20_000, 'started')
  const [cid] = containersOf(h)
  const info = JSON.parse(execFileSync('docker', ['inspect', cid!], { encoding: 'utf8' }))[0]
  t.equal(info.HostConfig.ShmSize, 256 * 1024 * 1024)
  t.equal(info.HostConfig.Memory, 128 * 1024 * 1024)
  t.same(info.HostConfig.SecurityOpt, ['no-new-privileges'])
  t.equal(info.Config.Labels['fgmachine.experiment'], id)
  t.equal(info.Config.Labels['fgmachine.project'], 'p')
  t.equal(info.Config.Labels['fgmachine.machine'], h.machine.registration.machineId)
  t.equal(info.Config.Labels['fgmachine.cpu-units'], '1000000')
  await h.fglab.waitFinished([id])
  const env = h.fglab.experiment(id).files.get('env.txt')?.data?.toString() ?? ''
  t.match(env, 'LR=0.5\n')
  t.match(env, 'NAME=x y\n')
  t.match(env, `FGLAB_EXPERIMENT_ID=${id}\n`)
  t.match(env, 'FGLAB_PROJECT_ID=p\n')
  t.match(env, `FGLAB_RESULTS_DIR=${h.resultsDir}/${id}\n`)
  t.equal(h.fglab.experiment(id).files.get('pwd.txt')?.data?.toString(), '/tmp\n')
})

t.test('local process mode runs the command as the original does', async (t) => {
  const script = 'echo "args: $*"; echo err >&2; printf \'{"_scores": {"x": 1}}\' > "$FGLAB_RESULTS_DIR/s.json"; pwd > "$FGLAB_RESULTS_DIR/pwd.txt"; echo "[$FGMACHINE_TOKEN|$FGM_INHERITED]" > "$FGLAB_RESULTS_DIR/env.txt"'
  // The environment is passed on as the original does, less FGMachine's own secret.
  process.env.FGMACHINE_TOKEN = 'not-for-experiments'
  process.env.FGM_INHERITED = 'yes'
  t.teardown(() => {
    delete process.env.FGMACHINE_TOKEN
    delete process.env.FGM_INHERITED
  })
  const h = await startHarness({
    projects: (r) => ({ p: { command: 'sh', args: ['-c', script, 'exp'], options: 'single-dash', capacity: 1, results: r, cwd: '/tmp' } }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { seed: 1, _id: id })
  await h.fglab.waitFinished([id])
  const e = h.fglab.experiment(id)
  t.equal(e.fields._status, 'success')
  t.same(e.fields._scores, { x: 1 })
  t.equal(e.files.get('pwd.txt')?.data?.toString(), '/tmp\n')
  t.equal(e.files.get('env.txt')?.data?.toString(), '[|yes]\n', 'FGMachine\'s environment, without FGMACHINE_TOKEN')
  const out = h.machine.logHub.backlog(id)
  t.match(out.filter((c) => c.stream === 'stdout').map((c) => c.text).join(''), `args: -seed 1 -_id ${id}`)
  t.match(out.filter((c) => c.stream === 'stderr').map((c) => c.text).join(''), 'err')
})

t.test('local process mode: kill and a missing command', async (t) => {
  const h = await startHarness({
    projects: (r) => ({
      slow: { command: 'sh', args: ['-c', 'sleep 60'], capacity: 0.5, results: r },
      missing: { command: '/nonexistent/program', capacity: 0.5, results: r },
    }),
  })
  t.teardown(() => h.close())
  const slow = objectId()
  const missing = objectId()
  await h.submit('slow', { _id: slow })
  await h.submit('missing', { _id: missing })
  await h.fglab.waitFor(() => h.fglab.experiment(slow).started === 1, 10_000, 'started')
  t.equal((await fetch(`${h.url}/experiments/${slow}/kill`, { method: 'POST' })).status, 200)
  await h.fglab.waitFinished([slow, missing], 20_000)
  t.equal(h.fglab.experiment(slow).fields._status, 'fail')
  t.equal(h.fglab.experiment(missing).fields._status, 'fail')
  t.match(h.fglab.experiment(missing).fields.reason, /ENOENT/)
  await h.machine.experiments.idle()
  t.equal((await h.capacity('slow')).body.capacity, 2)
})

t.test("without command, args and options go after the image's entrypoint", async (t) => {
  const entry = ensureEntrypointImage()
  const h = await startHarness({ projects: (r) => ({ p: { image: entry, args: 'train', options: 'double-dash', capacity: 1, results: r } }) })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { lr: 0.5, _id: id })
  await h.fglab.waitFinished([id])
  t.equal(h.fglab.experiment(id).fields._status, 'success')
  const stdout = h.machine.logHub.backlog(id).map((c) => c.text).join('')
  t.equal(stdout, `entrypoint: train --lr=0.5 --_id=${id}\n`)
})

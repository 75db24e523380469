import { execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureBusyboxImage, ensureNodeImage, testDockerSocket } from '../helpers/images.js'
import { freePort } from '../helpers/ports.js'
import { until } from '../helpers/until.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const busybox = ensureBusyboxImage()
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const IMAGE = 'fgmachine-test/fgmachine:dev'
const RUN_LABEL = `fgmachine-test.run=${process.pid}`

/** While the fake FGLab runs in this process, calls that need it answered must not block: dockerAsync. */
const dockerAsync = async (...args: string[]) => (await promisify(execFile)('docker', args, { encoding: 'utf8' })).stdout.trim()
const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 }).trim()


// The project's Dockerfile, built offline against a stand-in for node:24-slim. Its `npm ci`
// reaches the registry through the host's network: the test engine's bridge has no NAT.
t.before(() => {
  docker('build', '-q', '--network', 'host', '--build-arg', `NODE_IMAGE=${ensureNodeImage()}`, '-t', IMAGE, ROOT)
})
t.teardown(() => {
  const ids = docker('ps', '-aq', '--filter', `label=${RUN_LABEL}`).split('\n').filter(Boolean)
  if (ids.length) docker('rm', '-f', ...ids)
})

t.test('the image, run the seed\'s way, runs experiments as sibling containers whose results reach FGLab', async (t) => {
  const fglab = new FakeFglab()
  t.teardown(() => fglab.close())
  await fglab.start()
  // The host's folder for FGMachine's /data: results are /data/results inside FGMachine, elsewhere on the host.
  const hostData = mkdtempSync(path.join(os.tmpdir(), 'fgm-image-'))
  t.teardown(() => rmSync(hostData, { recursive: true, force: true }))
  const script = 'echo "{\\"_scores\\": {\\"acc\\": $2}}" > "$FGLAB_RESULTS_DIR/scores.json"; echo "seen at $FGLAB_RESULTS_DIR" > "$FGLAB_RESULTS_DIR/where.txt"; sleep 1'
  writeFileSync(
    path.join(hostData, 'projects.json'),
    JSON.stringify({
      shared: { image: busybox, command: 'sh', args: ['-c', script, 'exp'], capacity: 0.5, results: '/data/results' },
      unshared: { image: busybox, command: 'true', capacity: 0.5, results: '/tmp/results' },
    }),
  )
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const cid = docker(
    'run', '-d', '--label', RUN_LABEL, '--network', 'host',
    // The test engine's socket where FGMachine looks for Docker's: its siblings go to the test engine.
    '-v', `${testDockerSocket()}:/var/run/docker.sock`, '-v', `${hostData}:/data`,
    '-e', `FGLAB_URL=${fglab.url}`, '-e', `FGMACHINE_URL=${url}`, '-e', 'LOG_LEVEL=debug',
    IMAGE,
  )
  t.teardown(() => {
    if (t.passing()) return
    console.error(docker('logs', cid))
  })
  await until(async () => (await fetch(`${url}/health`).catch(() => undefined))?.ok === true, 'FGMachine to answer', 30_000, 200)
  await fglab.waitFor(() => fglab.projects.size === 1, 20_000, 'registration')
  const machineId = [...fglab.machines.keys()][0]!
  t.ok(readdirSync(hostData).includes('specs.json'), 'specs.json lands in the data folder by default')

  const health = await (await fetch(`${url}/health`)).json()
  t.match(health, { status: 'ok', docker: { ok: true }, fglab: { ok: true }, machine_id: machineId })
  t.match(await dockerAsync('exec', cid, 'node', 'dist/healthcheck.js'), /"status":"ok"/, 'the HEALTHCHECK command passes')

  const refused = await fetch(`${url}/projects/unshared/capacity`)
  t.equal(refused.status, 501, 'a project whose results are not shared with the host is refused')
  t.match(docker('logs', cid), /project unshared left out: results: results \/tmp\/results is inside FGMachine's container only.*-v \/some\/host\/folder:\/tmp\/results/)

  const ids = [objectId(), objectId()]
  for (const [n, id] of ids.entries()) {
    const res = await fetch(`${url}/projects/shared`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ acc: n, _id: id }) })
    t.equal(res.status, 200)
  }
  await until(() => docker('ps', '-q', '--filter', `label=fgmachine.experiment=${ids[0]}`) !== '', 'the sibling container', 20_000, 200)
  const sibling = JSON.parse(docker('inspect', docker('ps', '-q', '--filter', `label=fgmachine.experiment=${ids[0]}`)))[0]
  t.same(sibling.HostConfig.Binds, [`${hostData}/results/${ids[0]}:/data/results/${ids[0]}`], 'the bind mount names the host\'s path')
  t.equal(sibling.Config.Labels['fgmachine.machine'], machineId)

  await fglab.waitFinished(ids, 60_000)
  for (const [n, id] of ids.entries()) {
    const e = fglab.experiment(id)
    t.equal(e.fields._status, 'success')
    t.same(e.fields._scores, { acc: n })
    t.equal(e.files.get('where.txt')?.data?.toString(), `seen at /data/results/${id}\n`, 'the experiment sees its results at the results path')
  }
  await until(() => readdirSync(path.join(hostData, 'results')).length === 0, 'results folders removed', 10_000, 200)

  // docker stop sends SIGTERM and waits 10 s before SIGKILL: FGMachine must be gone well before.
  await dockerAsync('stop', cid)
  const state = JSON.parse(docker('inspect', cid))[0].State
  t.equal(state.ExitCode, 0, 'SIGTERM ends it cleanly (not SIGKILLed: that would be 137)')
  mkdirSync(path.join(hostData, 'results'), { recursive: true })
})

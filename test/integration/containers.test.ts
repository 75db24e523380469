import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { DockerContainerClient } from '../../src/docker/docker-container-client.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureBusyboxImage, testDockerHost } from '../helpers/images.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()
const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim()
/** A grace long enough that waiting it out shows. */
const GRACE_MS = 6000

const kill = (h: Harness, id: string) => fetch(`${h.url}/experiments/${id}/kill`, { method: 'POST' })
const started = (h: Harness, id: string) => h.fglab.waitFor(() => h.fglab.experiment(id).started === 1, 20_000, 'started')
const stdout = (h: Harness, id: string) => h.machine.logHub.backlog(id).filter((c) => c.stream === 'stdout').map((c) => c.text).join('')

t.test('the output stream gives each byte once: what the container wrote before it is not given again', async (t) => {
  // FGMachine attaches before it starts a container. Asking Docker for the logs too
  // (attach with logs=1) replays the log file after the stream is already wired, so
  // output written between the start and that replay came twice (1 run in ~120 here).
  // A container that ran once before makes the replay certain to hold something.
  const client = new DockerContainerClient(testDockerHost())
  const id = await client.create({ name: `fgmachine-attach-${objectId()}`, image, cmd: ['sh', '-c', 'echo out; echo err >&2'], env: [], labels: {}, binds: [] })
  t.teardown(() => client.remove(id))
  await client.start(id)
  await client.wait(id)
  const got = { stdout: '', stderr: '' }
  const read = (await client.attach(id)).read((stream, data) => (got[stream] += data.toString()))
  await client.start(id)
  await client.wait(id)
  await read
  t.same(got, { stdout: 'out\n', stderr: 'err\n' }, 'the second run\'s output, once')
})

t.test('Kill: a program without a SIGTERM handler ends at once; with init off it waits out the grace', async (t) => {
  const h = await startHarness({
    config: { killGraceMs: GRACE_MS },
    // `sleep` as the container's main process (exec'd): without an init it is PID 1, which ignores SIGTERM.
    projects: (r) => ({
      plain: { image, command: 'sh', args: ['-c', 'exec sleep 1000', 'sleep'], capacity: 0.5, results: r },
      noinit: { image, command: 'sh', args: ['-c', 'exec sleep 1000', 'sleep'], capacity: 0.5, results: r, init: false },
    }),
  })
  t.teardown(() => h.close())
  const [a, b] = [objectId(), objectId()]
  await h.submit('plain', { _id: a })
  await h.submit('noinit', { _id: b })
  await Promise.all([started(h, a), started(h, b)])
  const hc = JSON.parse(docker('inspect', `fgmachine-${a}`))[0].HostConfig
  t.equal(hc.Init, true, 'an init by default')
  t.same(hc.LogConfig, { Type: 'json-file', Config: { 'max-size': String(100 * 1024 * 1024), 'max-file': '3' } }, "the container's own log rotates by default: a week-long run cannot fill the disk")
  const killedAt = Date.now()
  await Promise.all([kill(h, a), kill(h, b)])
  await h.fglab.waitFinished([a])
  const took = Date.now() - killedAt
  t.ok(took < 3000, `reported fail ${took} ms after Kill (under 3 s; the grace is ${GRACE_MS} ms)`)
  t.match(h.fglab.experiment(a).fields, { _status: 'fail', killed: true, exit_code: 143 }, 'ended by SIGTERM itself')
  await h.fglab.waitFinished([b], 30_000)
  t.ok(Date.now() - killedAt >= GRACE_MS - 500, 'init: false: PID 1 ignored SIGTERM until the SIGKILL after the grace')
  t.match(h.fglab.experiment(b).fields, { _status: 'fail', killed: true, exit_code: 137 })
})

t.test('Kill: a program with a SIGTERM handler saves a checkpoint, and the checkpoint reaches FGLab', async (t) => {
  const h = await startHarness({
    config: { killGraceMs: GRACE_MS },
    projects: (r) => ({
      p: {
        image,
        command: 'sh',
        args: ['-c', 'trap \'echo "epoch 3" > "$FGLAB_RESULTS_DIR/checkpoint.txt"; echo saved; exit 0\' TERM; echo training; while true; do sleep 1; done'],
        capacity: 1,
        results: r,
      },
    }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await started(h, id)
  await h.fglab.waitFor(() => stdout(h, id).includes('training'), 10_000, 'the trap to be set')
  const killedAt = Date.now()
  await kill(h, id)
  await h.fglab.waitFinished([id])
  // Its own exit (code 0 below, not SIGKILL's 137) before the grace ran out; the time also holds
  // the trap's wait for the `sleep 1` under way, the removal and the reports.
  t.ok(Date.now() - killedAt < GRACE_MS - 1000, 'it saved and exited inside the grace')
  const e = h.fglab.experiment(id)
  t.equal(e.files.get('checkpoint.txt')?.data?.toString(), 'epoch 3\n', 'the checkpoint written on SIGTERM is uploaded')
  t.match(e.fields, { _status: 'fail', killed: true, exit_code: 0 }, 'a killed experiment is never a success, even one that exits 0')
  t.match(stdout(h, id), 'saved')
})

t.test('container options from projects.json reach Docker: init, ipc, ulimits, log rotation', async (t) => {
  const h = await startHarness({
    projects: (r) => ({
      p: {
        image,
        command: 'sh',
        args: ['-c', 'ulimit -l; ulimit -s; tr "\\0" " " < /proc/1/cmdline; echo; while [ ! -e "$FGLAB_RESULTS_DIR/go" ]; do sleep 0.2; done'],
        capacity: 1,
        results: r,
        ipc: 'shareable',
        // (memlock -1 needs a daemon whose own hard limit allows it: not this test engine's.)
        ulimits: { memlock: 1048576, stack: 67108864, nofile: '1024:4096' },
        log: { max_size: '10m', max_files: 2 },
      },
    }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await started(h, id)
  const hc = JSON.parse(docker('inspect', `fgmachine-${id}`))[0].HostConfig
  t.equal(hc.Init, true)
  t.equal(hc.IpcMode, 'shareable')
  t.same(hc.Ulimits, [
    { Name: 'memlock', Soft: 1048576, Hard: 1048576 },
    { Name: 'stack', Soft: 67108864, Hard: 67108864 },
    { Name: 'nofile', Soft: 1024, Hard: 4096 },
  ])
  t.same(hc.LogConfig, { Type: 'json-file', Config: { 'max-size': String(10 * 1024 * 1024), 'max-file': '2' } })
  writeFileSync(path.join(h.resultsDir, id, 'go'), '')
  await h.fglab.waitFinished([id])
  t.equal(h.fglab.experiment(id).fields._status, 'success')
  const [memlock, stack, pid1] = stdout(h, id).split('\n')
  t.equal(memlock, '1024', 'memlock in KiB')
  t.equal(stack, '65536', 'stack in KiB')
  t.match(pid1, /^\/sbin\/docker-init -- sh -c /, "Docker's init is PID 1; the program is its child")
})

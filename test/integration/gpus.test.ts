import { execFileSync } from 'node:child_process'
import t from 'tap'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { useStandInNvidiaSmi } from '../helpers/stand-in-gpus.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()
// Two H100s, as nvidia-smi on PATH lists them; dockerd has the stub NVIDIA hook (.ci/run).
useStandInNvidiaSmi('h100x2.csv')

/** Writes what the container sees of its GPUs, then waits for a file to appear before exiting. */
const SEE = 'echo "$NVIDIA_VISIBLE_DEVICES|$CUDA_VISIBLE_DEVICES|$*" > "$FGLAB_RESULTS_DIR/gpus.txt"; while [ ! -e "$FGLAB_RESULTS_DIR/stop" ]; do sleep 0.1; done; rm "$FGLAB_RESULTS_DIR/stop"'

/** The stand-in GPUs' UUIDs, by index (h100x2.csv): how containers are told their GPUs. */
const UUID = ['GPU-8f6e3a52-9c1d-4b7e-a0f3-2d5c6b7a8e91', 'GPU-1b2c3d4e-5f60-4718-9a0b-c1d2e3f4a5b6'] as const

function gpuProject(results: string, gpu_capacity: number, extra: Record<string, unknown> = {}) {
  return { image, command: 'sh', args: ['-c', SEE, 'exp'], options: 'plain', capacity: 0.1, gpu_capacity, gpu_command: '--gpu', results, ...extra }
}

async function release(h: Harness, ids: string[]): Promise<void> {
  const { writeFileSync } = await import('node:fs')
  for (const id of ids) writeFileSync(`${h.resultsDir}/${id}/stop`, '')
  await h.fglab.waitFinished(ids, 30_000)
}

function seen(h: Harness, id: string): string {
  return h.fglab.experiment(id).files.get('gpus.txt')?.data?.toString().trim() ?? ''
}

t.test('gpu_capacity 0.5 on two GPUs: four at once, two per GPU, each seeing only its own as GPU 0', async (t) => {
  const h = await startHarness({
    config: { gpus: undefined },
    projects: (r) => ({ half: gpuProject(r, 0.5, { env: { CUDA_VISIBLE_DEVICES: '0,1', NVIDIA_VISIBLE_DEVICES: 'all' } }) }),
  })
  t.teardown(() => h.close())
  t.same(h.machine.gpus.map((g) => g.name), ['NVIDIA H100 80GB HBM3', 'NVIDIA H100 80GB HBM3'])
  const doc = h.fglab.machines.get(h.machine.registration.machineId!) as Record<string, unknown>
  t.same(doc.gpus, ['NVIDIA H100 80GB HBM3', 'NVIDIA H100 80GB HBM3'], 'FGLab is told the GPU names')
  t.equal((await h.capacity('half')).body.capacity, 4)

  const ids = Array.from({ length: 4 }, objectId)
  for (const id of ids) t.equal((await h.submit('half', { _id: id })).status, 200)
  const fifth = await h.submit('half', { _id: objectId() })
  t.equal(fifth.status, 501, 'the fifth start is refused')
  t.equal((await h.capacity('half')).status, 501)

  const gpus = (await (await fetch(`${h.url}/gpus`)).json()) as { gpus: Array<{ index: number; allocated: number; allocations: Array<{ experiment: string; share: number }> }> }
  t.same(gpus.gpus.map((g) => g.allocated), [1, 1], '/gpus: both GPUs full')
  t.same(gpus.gpus.map((g) => g.allocations.length), [2, 2])
  t.same(gpus.gpus[0]!.allocations.map((a) => a.experiment).sort(), [ids[0], ids[2]].sort(), 'spread: 1st and 3rd on GPU 0')

  // Wait until each container wrote what it sees.
  const { existsSync } = await import('node:fs')
  await h.fglab.waitFor(() => ids.every((id) => existsSync(`${h.resultsDir}/${id}/gpus.txt`)), 20_000, 'containers running')
  await release(h, ids)
  const byGpu = new Map<string, number>()
  for (const id of ids) {
    const [visible, cuda, args] = seen(h, id).split('|')
    byGpu.set(visible!, (byGpu.get(visible!) ?? 0) + 1)
    t.equal(cuda, '', 'CUDA_VISIBLE_DEVICES from env does not reach the container')
    t.equal(args, `_id ${id} --gpu 0`, 'gpu_command with the container-local index')
  }
  t.same(Object.fromEntries(byGpu), { [UUID[0]]: 2, [UUID[1]]: 2 }, 'NVIDIA_VISIBLE_DEVICES: two containers on each GPU, named by UUID')
  await h.machine.experiments.idle()
  t.equal((await h.capacity('half')).body.capacity, 4, 'all GPUs free again')
})

t.test('gpu_capacity 2 gets both GPUs as 0,1 and blocks the others until it ends', async (t) => {
  const h = await startHarness({
    config: { gpus: undefined },
    projects: (r) => ({ two: gpuProject(r, 2), half: gpuProject(r, 0.5) }),
  })
  t.teardown(() => h.close())
  const big = objectId()
  t.equal((await h.submit('two', { _id: big })).status, 200)
  t.equal((await h.capacity('half')).status, 501, 'fractional projects are blocked')
  t.equal((await h.capacity('two')).status, 501)
  const { existsSync } = await import('node:fs')
  await h.fglab.waitFor(() => existsSync(`${h.resultsDir}/${big}/gpus.txt`), 20_000, 'container running')
  await release(h, [big])
  t.equal(seen(h, big), `${UUID[0]},${UUID[1]}||_id ${big} --gpu 0,1`)
  await h.machine.experiments.idle()
  t.equal((await h.capacity('half')).body.capacity, 4)
})

t.test('a project without GPUs gets none, even where nvidia is the default runtime', async (t) => {
  const h = await startHarness({
    config: { gpus: undefined },
    projects: (r) => ({ cpu: { image, command: 'sh', args: ['-c', 'echo "$NVIDIA_VISIBLE_DEVICES" > "$FGLAB_RESULTS_DIR/v.txt"'], capacity: 0.5, results: r, env: { NVIDIA_VISIBLE_DEVICES: 'all' } } }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('cpu', { _id: id })
  await h.fglab.waitFinished([id])
  t.equal(h.fglab.experiment(id).files.get('v.txt')?.data?.toString(), 'void\n')
})

t.test('FGMACHINE_GPUS picks GPUs by index or UUID; "none" hands out none', async (t) => {
  const one = await startHarness({ config: { gpus: 'GPU-1b2c3d4e-5f60-4718-9a0b-c1d2e3f4a5b6' }, projects: (r) => ({ half: gpuProject(r, 0.5) }) })
  t.teardown(() => one.close())
  t.same(one.machine.gpus.map((g) => g.index), [1])
  t.equal((await one.capacity('half')).body.capacity, 2)
  const id = objectId()
  await one.submit('half', { _id: id })
  const { existsSync } = await import('node:fs')
  await one.fglab.waitFor(() => existsSync(`${one.resultsDir}/${id}/gpus.txt`), 20_000, 'container running')
  await release(one, [id])
  t.equal(seen(one, id).split('|')[0], UUID[1], 'the container gets host GPU 1')

  const none = await startHarness({ config: { gpus: 'none' }, projects: (r) => ({ half: gpuProject(r, 0.5) }) })
  t.teardown(() => none.close())
  t.same(none.machine.gpus, [])
  t.match(await none.capacity('half'), { status: 501, body: { cause: 'no_gpus', reason: /asks for GPUs \(gpu_capacity 0\.5\) and this machine has none/ } }, 'a GPU project on a machine without GPUs has no capacity, and is told why')
})

t.test('local process GPU projects get gpu_command and the host index', async (t) => {
  const h = await startHarness({
    config: { gpus: '1' },
    projects: (r) => ({ local: { command: 'sh', args: ['-c', 'echo "$*" > "$FGLAB_RESULTS_DIR/args.txt"', 'exp'], capacity: 0.5, gpu_capacity: 1, gpu_command: '-gpu', results: r } }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('local', { _id: id })
  await h.fglab.waitFinished([id])
  t.equal(h.fglab.experiment(id).files.get('args.txt')?.data?.toString(), `_id ${id} -gpu 1\n`)
})

t.test('the container gets the NVIDIA device request', async (t) => {
  const h = await startHarness({ config: { gpus: undefined }, projects: (r) => ({ half: gpuProject(r, 0.5) }) })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('half', { _id: id })
  const { existsSync } = await import('node:fs')
  await h.fglab.waitFor(() => existsSync(`${h.resultsDir}/${id}/gpus.txt`), 20_000, 'container running')
  const cid = execFileSync('docker', ['ps', '-q', '--filter', `label=fgmachine.experiment=${id}`], { encoding: 'utf8' }).trim()
  const info = JSON.parse(execFileSync('docker', ['inspect', cid], { encoding: 'utf8' }))[0]
  t.same(info.HostConfig.DeviceRequests, [{ Driver: 'nvidia', Count: 0, DeviceIDs: [UUID[0]], Capabilities: [['gpu']], Options: null }])
  t.equal(info.Config.Labels['fgmachine.gpus'], '0:500000')
  await release(h, [id])
})

t.test('on an engine without the NVIDIA runtime a GPU experiment fails with Docker\'s reason, its GPUs released, no container left', async (t) => {
  const { startBareDockerd } = await import('../helpers/bare-dockerd.js')
  const bare = await startBareDockerd([image])
  t.teardown(() => bare.close())
  const h = await startHarness({ config: { gpus: undefined, dockerHost: bare.host }, projects: (r) => ({ half: gpuProject(r, 0.5) }) })
  t.teardown(() => h.close())
  await h.fglab.waitFor(() => h.logs.find(/no nvidia runtime/) !== undefined, 10_000, 'the start-up warning')
  const id = objectId()
  t.equal((await h.submit('half', { _id: id })).status, 200)
  await h.fglab.waitFinished([id], 30_000)
  const e = h.fglab.experiment(id)
  t.equal(e.fields._status, 'fail')
  t.match(e.fields.reason, /could not select device driver "(nvidia)?" with capabilities: \[\[gpu\]\]/)
  const stderr = h.machine.logHub.backlog(id).filter((c) => c.stream === 'stderr').map((c) => c.text).join('')
  t.match(stderr, /could not select device driver/, 'the reason is in the live log')
  await h.machine.experiments.idle()
  t.equal((await h.capacity('half')).body.capacity, 4, 'its GPU share is released')
  const left = execFileSync('docker', ['-H', bare.host, 'ps', '-aq'], { encoding: 'utf8' }).trim()
  t.equal(left, '', 'no container left')
})

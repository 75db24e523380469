import { PassThrough } from 'node:stream'
import Docker from 'dockerode'
import t from 'tap'
import { pullImage } from '../../src/docker/image-pull.js'
import type { PullProgress } from '../../src/docker/pull-progress.js'
import { TestClock } from '../helpers/test-clock.js'

/** A dockerode whose pull answers 200 with these progress events (as the Engine API streams them). */
function engine(events: object[]): Docker {
  const docker = new Docker({ socketPath: '/nonexistent/docker.sock' })
  docker.pull = (async () => {
    const s = new PassThrough()
    setImmediate(() => {
      for (const e of events) s.write(JSON.stringify(e) + '\r\n')
      s.end()
    })
    return s
  }) as unknown as Docker['pull']
  return docker
}

t.test('a pull that fails inside its progress stream fails with Docker\'s own reason', async (t) => {
  const progress: string[] = []
  const clock = new TestClock({ auto: false })
  const docker = engine([
    { status: 'Pulling from library/pytorch', id: '2.5' },
    { status: 'Downloading', id: 'abc', progress: '[==>   ]' },
    { errorDetail: { message: 'write /var/lib/docker/tmp/GetImageBlob123: no space left on device' }, error: 'write /var/lib/docker/tmp/GetImageBlob123: no space left on device' },
  ])
  await t.rejects(pullImage(docker, 'pytorch/pytorch:2.5', { stallMs: 60_000, clock, onProgress: (p) => progress.push(p.phase) }), {
    message: 'cannot pull image pytorch/pytorch:2.5: write /var/lib/docker/tmp/GetImageBlob123: no space left on device',
  })
  t.same(progress, ['started'], 'its start was told, and no end')
})

t.test('a rate limit said in the stream, likewise', async (t) => {
  const docker = engine([{ error: 'toomanyrequests: You have reached your pull rate limit.' }])
  await t.rejects(pullImage(docker, 'busybox:1', { stallMs: 60_000, onProgress: () => {} }), { message: /toomanyrequests: You have reached your pull rate limit/ })
})

t.test('a pull that ends well resolves', async (t) => {
  const docker = engine([{ status: 'Pulling fs layer', id: 'x' }, { status: 'Status: Downloaded newer image for busybox:1' }])
  const phases: string[] = []
  await t.resolves(pullImage(docker, 'busybox:1', { stallMs: 60_000, onProgress: (p) => phases.push(p.phase) }))
  t.same(phases, ['started', 'done'])
})

t.test('progress is told at the start, every interval (also while nothing moves), and at the end, summed over the layers', async (t) => {
  const stream = new PassThrough()
  const docker = new Docker({ socketPath: '/nonexistent/docker.sock' })
  let auth: unknown
  docker.pull = (async (_image: string, opts: { authconfig?: unknown }) => {
    auth = opts.authconfig
    return stream
  }) as unknown as Docker['pull']
  const clock = new TestClock({ auto: false })
  const told: PullProgress[] = []
  const send = (...events: object[]) => new Promise((r) => stream.write(events.map((e) => JSON.stringify(e) + '\r\n').join(''), () => setImmediate(r)))
  const pulled = pullImage(docker, 'x/y:1', {
    stallMs: 60_000,
    clock,
    progressIntervalMs: 5000,
    auth: { username: 'u', password: 'p', serveraddress: 'https://index.docker.io/v1/' },
    onProgress: (p) => told.push(p),
  })
  await send({ status: 'Pulling from x/y', id: '1' }, { status: 'Pulling fs layer', progressDetail: {}, id: 'a' }, { status: 'Pulling fs layer', progressDetail: {}, id: 'b' })
  t.same(auth, { username: 'u', password: 'p', serveraddress: 'https://index.docker.io/v1/' }, 'the credentials go to Docker')
  t.same(told.map((p) => p.phase), ['started'])
  await send({ status: 'Downloading', progressDetail: { current: 250, total: 1000 }, id: 'a' }, { status: 'Downloading', progressDetail: { current: 0, total: 3000 }, id: 'b' })
  t.equal(told.length, 1, 'events alone tell nothing before the interval')
  clock.advance(5000)
  await new Promise((r) => setImmediate(r))
  t.match(told[1], { phase: 'downloading', layers: 2, layersDone: 0, downloadedBytes: 250, totalBytes: 4000, percent: 6, elapsedMs: 5000 })
  clock.advance(5000)
  await new Promise((r) => setImmediate(r))
  t.match(told[2], { downloadedBytes: 250, elapsedMs: 10_000 }, 'told again though nothing moved')
  await send(
    { status: 'Download complete', progressDetail: {}, id: 'a' },
    { status: 'Pull complete', progressDetail: {}, id: 'a' },
    { status: 'Download complete', progressDetail: {}, id: 'b' },
    { status: 'Pull complete', progressDetail: {}, id: 'b' },
    { status: 'Status: Downloaded newer image for x/y:1' },
  )
  stream.end()
  await pulled
  t.equal(told.length, 4)
  t.match(told[3], { phase: 'done', layers: 2, layersDone: 2, downloadedBytes: 4000, percent: 100, status: 'Downloaded newer image for x/y:1' })
  t.equal(clock.pending, 0, 'no tick is left waiting')
})

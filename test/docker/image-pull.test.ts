import { PassThrough } from 'node:stream'
import Docker from 'dockerode'
import t from 'tap'
import { pullImage } from '../../src/docker/image-pull.js'

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
  const docker = engine([
    { status: 'Pulling from library/pytorch', id: '2.5' },
    { status: 'Downloading', id: 'abc', progress: '[==>   ]' },
    { errorDetail: { message: 'write /var/lib/docker/tmp/GetImageBlob123: no space left on device' }, error: 'write /var/lib/docker/tmp/GetImageBlob123: no space left on device' },
  ])
  await t.rejects(pullImage(docker, 'pytorch/pytorch:2.5', 60_000, (p) => progress.push(p.status)), {
    message: 'cannot pull image pytorch/pytorch:2.5: write /var/lib/docker/tmp/GetImageBlob123: no space left on device',
  })
  t.same(progress, ['Pulling from library/pytorch', 'Downloading'], 'the progress before it was told')
})

t.test('a rate limit said in the stream, likewise', async (t) => {
  const docker = engine([{ error: 'toomanyrequests: You have reached your pull rate limit.' }])
  await t.rejects(pullImage(docker, 'busybox:1', 60_000, () => {}), { message: /toomanyrequests: You have reached your pull rate limit/ })
})

t.test('a pull that ends well resolves', async (t) => {
  const docker = engine([{ status: 'Pulling fs layer', id: 'x' }, { status: 'Status: Downloaded newer image for busybox:1' }])
  await t.resolves(pullImage(docker, 'busybox:1', 60_000, () => {}))
})

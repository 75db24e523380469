import pino from 'pino'
import t from 'tap'
import { prepareImages } from '../../src/docker/prepare-images.js'
import type { Project } from '../../src/projects/schema.js'
import { FakeContainerClient } from '../helpers/fake-container-client.js'
import { LogSink } from '../helpers/harness.js'

const project = (id: string, fields: Record<string, unknown>) => ({ id, ...fields }) as unknown as Project

function rig() {
  const docker = new FakeContainerClient()
  const sink = new LogSink()
  return { docker, sink, log: pino({ level: 'debug' }, sink) }
}

t.test('each container project\'s image: here, pullable, pre-pulled, or a warning saying why it cannot be', async (t) => {
  const { docker, sink, log } = rig()
  docker.images.add('team/here:1')
  docker.pullError.set('team/private:1', 'no basic auth credentials; run `docker login` on the host')
  const prepared = await prepareImages(
    [
      project('local', { command: 'node' }),
      project('here', { image: 'team/here:1' }),
      project('later', { image: 'team/later:1' }),
      project('private', { image: 'team/private:1', prepull: true }),
      project('pre1', { image: 'team/big:1', prepull: true }),
      project('pre2', { image: 'team/big:1' }),
    ],
    docker,
    log,
  )
  t.equal(docker.calls.filter((c) => c === 'imageStatus').length, 4, 'each image looked at once')
  t.match(sink.find('image not present locally and cannot be pulled'), {
    level: 40,
    image: 'team/private:1',
    projects: ['private'],
    reason: 'no basic auth credentials; run `docker login` on the host',
  })
  t.match(sink.find('image not present locally: it is pulled when an experiment first needs it'), { level: 30, image: 'team/later:1', projects: ['later'] })
  t.match(sink.find('pre-pulling image'), { image: 'team/big:1', projects: ['pre1', 'pre2'] })
  t.equal(sink.lines.filter((l) => l.msg === 'pre-pulling image').length, 1, 'only the prepull project\'s image is pulled')
  await prepared.pulls
  t.same([...docker.pulls], [['team/big:1', 1]])
  t.match(sink.find('pulled image'), { image: 'team/big:1', phase: 'done', percent: 100 })
  t.notOk(sink.lines.some((l) => l.image === 'team/here:1'), 'an image that is here: nothing to say')
})

t.test('a pre-pull that fails is logged; Docker not answering is a warning; neither rejects', async (t) => {
  const { docker, sink, log } = rig()
  docker.onCall = (op) => {
    if (op === 'ensureImage') docker.pullError.set('team/big:1', 'write /var/lib/docker/tmp/x: no space left on device')
  }
  const prepared = await prepareImages([project('pre', { image: 'team/big:1', prepull: true })], docker, log)
  await prepared.pulls
  t.match(sink.find('pre-pulling image failed: its experiments will try again'), { level: 40, err: /no space left on device/ })
  docker.down = true
  await (await prepareImages([project('pre', { image: 'team/big:1', prepull: true })], docker, log)).pulls
  t.match(sink.find('cannot tell whether the image is here: Docker did not answer'), { level: 40, image: 'team/big:1' })
})

import t from 'tap'
import { DockerError } from '../../src/docker/container-client.js'
import { timedClient } from '../../src/docker/timed-client.js'
import { FakeContainerClient } from '../helpers/fake-container-client.js'

t.test("the engine's short requests are timed by operation, failures told; long waits are not", async (t) => {
  const engine = new FakeContainerClient()
  engine.images.add('img')
  const told: Array<[string, boolean]> = []
  const docker = timedClient(engine, (op, seconds, ok) => {
    t.ok(seconds >= 0)
    told.push([op, ok])
  })
  const spec = { name: 'c', image: 'img', env: [], labels: {}, binds: [] }
  const id = await docker.create(spec)
  await docker.start(id)
  await docker.inspectContainer(id)
  engine.failNext('stop', new DockerError('cannot stop (fake)', 500))
  await t.rejects(docker.stop(id, 1))
  const exit = docker.wait(id) // lasts as long as the container: not timed
  await docker.stop(id, 1)
  await exit
  t.same(told, [
    ['create', true],
    ['start', true],
    ['inspect', true],
    ['stop', false],
    ['stop', true],
  ])
  t.equal((docker as unknown as FakeContainerClient).containers, engine.containers, 'everything else is the client itself')
})

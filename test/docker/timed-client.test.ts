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
  await t.rejects(docker.create({ name: 'new', image: 'not/here:1', env: [], labels: {}, binds: [] }), /No such image/)
  const spec = { name: 'c', image: 'img', env: [], labels: {}, binds: [] }
  const id = await docker.create(spec)
  await docker.start(id)
  await docker.inspectContainer(id)
  const exit = docker.wait(id) // lasts as long as the container: not timed
  await docker.stop(id, 1) // lasts the program's shutdown: not timed
  await exit
  engine.failNext('remove', new DockerError('cannot remove (fake)', 500))
  await t.rejects(docker.remove(id))
  await docker.remove(id)
  t.same(told, [
    ['create', true], // no such image: how a pull begins, not a failure
    ['create', true],
    ['start', true],
    ['inspect', true],
    ['remove', false],
    ['remove', true],
  ])
  t.equal((docker as unknown as FakeContainerClient).containers, engine.containers, 'everything else is the client itself')
})

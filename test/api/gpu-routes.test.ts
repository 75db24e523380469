import Fastify from 'fastify'
import t from 'tap'
import { gpuRoutes } from '../../src/api/gpu-routes.js'
import { Scheduler } from '../../src/scheduler/scheduler.js'

t.test('GET /gpus: shares per experiment, and each GPU\'s total without floating-point drift', async (t) => {
  const gpus = [
    { index: 0, uuid: 'GPU-a', name: 'NVIDIA H100 80GB HBM3', memoryTotalMiB: 81559 },
    { index: 1, uuid: 'GPU-b', name: 'NVIDIA H100 80GB HBM3', memoryTotalMiB: 81559 },
  ]
  const s = new Scheduler([0, 1])
  for (const id of ['a', 'b', 'c', 'd', 'e', 'f']) s.reserve(id, { id: 'tenth', capacity: 0.01, gpu_capacity: 0.1 })
  const app = Fastify()
  gpuRoutes(app, gpus, s)
  t.teardown(() => app.close())
  const res = await app.inject({ method: 'GET', url: '/gpus' })
  t.equal(res.statusCode, 200)
  const body = res.json() as { gpus: Array<{ index: number; uuid: string; allocated: number; allocations: Array<{ experiment: string; project: string; share: number }> }> }
  t.same(body.gpus.map((g) => g.allocated), [0.3, 0.3], 'three tenths are 0.3 exactly')
  t.same(body.gpus[0]!.allocations, [
    { experiment: 'a', project: 'tenth', share: 0.1 },
    { experiment: 'c', project: 'tenth', share: 0.1 },
    { experiment: 'e', project: 'tenth', share: 0.1 },
  ], 'spread: every other one on GPU 0')
  t.same(body.gpus.map((g) => g.uuid), ['GPU-a', 'GPU-b'])
})

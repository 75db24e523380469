import t from 'tap'
import { HostPaths } from '../../src/docker/host-paths.js'
import { parseProjects } from '../../src/projects/schema.js'
import { reviewProjects } from '../../src/projects/review.js'

const load = (raw: Record<string, unknown>) => [...parseProjects(raw, '/srv').projects.values()]
const base = { image: 'busybox:1', capacity: 0.5, results: '/data/results' }

t.test('a GPU project on a machine without GPUs', async (t) => {
  const ps = load({ g: { ...base, gpu_capacity: 1 }, c: base })
  t.match(reviewProjects(ps, { gpus: 0, hostPaths: HostPaths.onHost, exists: () => true }), [{ projectId: 'g', message: /^project g: asks for GPUs, but this machine has none/ }])
  t.same(reviewProjects(ps, { gpus: 2, hostPaths: HostPaths.onHost, exists: () => true }), [])
})

t.test('on the host: a volume source that does not exist would be created empty by Docker', async (t) => {
  const ps = load({ v: { ...base, volumes: ['/home/me/mnist:/code:ro', '/nope/datasets:/datasets:ro', 'named-vol:/cache'] } })
  const w = reviewProjects(ps, { gpus: 0, hostPaths: HostPaths.onHost, exists: (p) => p === '/home/me/mnist' })
  t.equal(w.length, 1)
  t.match(w[0]!.message, 'volumes[1] "/nope/datasets:/datasets:ro": /nope/datasets does not exist on this host; Docker would create it, empty and owned by root')
})

t.test("in a container: a volume source that is a path in FGMachine's own mounts is most likely meant as that", async (t) => {
  const hp = HostPaths.inContainer('c0ffee', [{ type: 'bind', source: '/srv/fgmachine', destination: '/data' }])
  const ps = load({ v: { ...base, volumes: ['/data/datasets:/datasets:ro', '/home/me/mnist:/code:ro'] } })
  const w = reviewProjects(ps, { gpus: 0, hostPaths: hp, exists: () => false })
  t.equal(w.length, 1, 'host paths are not checked from inside a container: they are the host\'s')
  t.match(w[0]!.message, /volumes\[0\] "\/data\/datasets:\/datasets:ro": \/data\/datasets is passed to Docker as written, so it is read on the host.*write "\/srv\/fgmachine\/datasets:\/datasets:ro"/)
})

import t from 'tap'
import { Scheduler, type Lease } from '../../src/scheduler/scheduler.js'

interface Spec {
  id: string
  capacity: number
  gpu_capacity?: number
}

const project = (capacity: number, gpu_capacity?: number, id = 'proj'): Spec => (gpu_capacity === undefined ? { id, capacity } : { id, capacity, gpu_capacity })

/** Reserve `tries` experiments in a row; the ids of those that got a lease. */
function fill(s: Scheduler, p: Spec, tries = 40, prefix = 'exp'): string[] {
  const got: string[] = []
  for (let i = 0; i < tries; i++) if (s.reserve(`${prefix}-${i}`, p)) got.push(`${prefix}-${i}`)
  return got
}

t.test('fractional capacities admit exactly as many as they promise', async (t) => {
  for (const [capacity, expected] of [
    [0.1, 10],
    [0.3, 3],
    [1 / 3, 3],
    [0.5, 2],
    [1, 1],
  ] as const) {
    const s = new Scheduler()
    const p = project(capacity)
    const before = s.capacity(p)
    t.equal(fill(s, p).length, expected, `capacity ${capacity}: ${expected} reservations succeed`)
    t.equal(before, expected, `capacity ${capacity}: capacity() said ${expected} beforehand`)
    t.equal(s.capacity(p), 0, `capacity ${capacity}: nothing left afterwards`)
  }
})

t.test('capacity() counts down with each reservation', async (t) => {
  const s = new Scheduler()
  const p = project(0.1)
  for (let i = 0; i < 10; i++) {
    t.equal(s.capacity(p), 10 - i)
    t.ok(s.reserve(`e${i}`, p))
  }
  t.equal(s.capacity(p), 0)
  t.equal(s.reserve('e10', p), undefined)
})

t.test('projects share the machine', async (t) => {
  const s = new Scheduler()
  t.ok(s.reserve('a', project(0.5, undefined, 'big')))
  t.equal(s.capacity(project(0.1)), 5, 'half the machine is left for 0.1 experiments')
  t.equal(s.capacity(project(0.6)), 0)
})

t.test('the same experiment id cannot be reserved twice', async (t) => {
  const s = new Scheduler()
  const p = project(0.1)
  t.ok(s.reserve('x', p))
  t.equal(s.reserve('x', p), undefined)
  t.equal(s.capacity(p), 9)
})

t.test('release frees exactly once', async (t) => {
  const s = new Scheduler()
  const p = project(0.5)
  t.equal(fill(s, p).length, 2)
  t.equal(s.release('exp-0'), true)
  t.equal(s.capacity(p), 1)
  t.equal(s.release('exp-0'), false, 'a second release is a no-op')
  t.equal(s.capacity(p), 1, 'and frees nothing more')
  t.equal(s.release('never-reserved'), false)
  t.equal(s.usage().cpuUnits, s.leases()[0]!.cpuUnits, 'usage is what the remaining lease holds')
  t.ok(s.reserve('exp-again', p))
  t.equal(s.reserve('exp-more', p), undefined)
})

t.test('retainOnly releases every lease not in the live set', async (t) => {
  const s = new Scheduler()
  const p = project(0.25)
  t.equal(fill(s, p, 4).length, 4)
  const dropped = s.retainOnly(new Set(['exp-1', 'exp-3', 'not-leased']))
  t.strictSame(dropped.sort(), ['exp-0', 'exp-2'])
  t.strictSame(
    s.leases().map((l) => l.experimentId).sort(),
    ['exp-1', 'exp-3'],
  )
  t.equal(s.capacity(p), 2)
  t.strictSame(s.retainOnly(new Set()).sort(), ['exp-1', 'exp-3'])
  t.equal(s.capacity(p), 4)
  t.equal(s.usage().cpuUnits, 0)
})

t.test('GPU placement', async (t) => {
  t.test('fractional GPU shares spread across GPUs, then fill them', async (t) => {
    const s = new Scheduler([0, 1])
    const p = project(0.1, 0.5)
    t.equal(s.capacity(p), 4)
    const a = s.reserve('a', p)
    const b = s.reserve('b', p)
    t.equal(a?.gpus.length, 1)
    t.equal(b?.gpus.length, 1)
    t.not(a?.gpus[0]?.index, b?.gpus[0]?.index, 'the first two go to different GPUs')
    t.ok(s.reserve('c', p))
    t.ok(s.reserve('d', p))
    t.equal(s.capacity(p), 0)
    t.equal(s.reserve('e', p), undefined, 'the fifth is refused although the CPU side has room')
    const perGpu = [...s.usage().gpus.values()]
    t.equal(perGpu.length, 2)
    t.equal(perGpu[0], perGpu[1], 'both GPUs carry the same load')
    t.equal(s.capacity(project(0.1)), 6, 'a CPU-only project still fits')
  })

  t.test('released GPU share goes to the next one', async (t) => {
    const s = new Scheduler([0, 1])
    const p = project(0.1, 0.5)
    fill(s, p, 4)
    const freed = s.leases().find((l) => l.experimentId === 'exp-2')!.gpus[0]!.index
    s.release('exp-2')
    const next = s.reserve('next', p)
    t.equal(next?.gpus[0]?.index, freed)
  })

  t.test('gpu_capacity 2 takes two whole GPUs and blocks fractional ones', async (t) => {
    const s = new Scheduler([0, 1])
    const whole = project(0.1, 2, 'whole')
    const frac = project(0.1, 0.5, 'frac')
    t.equal(s.capacity(whole), 1)
    const lease = s.reserve('w', whole)
    t.strictSame(lease?.gpus.map((g) => g.index).sort(), [0, 1])
    t.equal(s.capacity(frac), 0)
    t.equal(s.reserve('f', frac), undefined)
    t.equal(s.capacity(whole), 0)
    s.release('w')
    t.equal(s.capacity(frac), 4)
  })

  t.test('a fractional share keeps a GPU from being taken whole', async (t) => {
    const s = new Scheduler([0, 1])
    t.ok(s.reserve('f', project(0.1, 0.25, 'frac')))
    t.equal(s.capacity(project(0.1, 2)), 0)
    t.equal(s.reserve('w', project(0.1, 2)), undefined)
    t.equal(s.capacity(project(0.1, 1)), 1, 'the other GPU is still free to take whole')
  })

  t.test('a GPU project on a machine without GPUs has no capacity', async (t) => {
    const s = new Scheduler([])
    t.equal(s.capacity(project(0.1, 0.5)), 0)
    t.equal(s.reserve('x', project(0.1, 0.5)), undefined)
    t.equal(s.capacity(project(0.1, 2)), 0)
    t.equal(s.reserve('y', project(0.1, 2)), undefined)
    t.equal(s.capacity(project(0.1)), 10, 'CPU projects are unaffected')
  })
})

t.test('adopt records a running lease, even over capacity', async (t) => {
  const s = new Scheduler([0])
  const p = project(0.5, 0.5)
  const lease = s.reserve('a', p)!
  const adopted: Lease = { experimentId: 'b', projectId: 'proj', cpuUnits: lease.cpuUnits, gpus: [{ index: 0, units: lease.gpus[0]!.units }] }
  s.adopt(adopted)
  t.equal(s.capacity(p), 0)
  s.adopt({ ...adopted, experimentId: 'c' })
  t.equal(s.leases().length, 3, 'an over-committing lease is still recorded')
  t.equal(s.capacity(p), 0, 'and capacity never goes negative')
  s.adopt(adopted)
  t.equal(s.leases().length, 3, 'adopting the same experiment twice is a no-op')
  t.equal(s.release('c'), true)
  t.equal(s.release('b'), true)
  t.equal(s.capacity(p), 1, 'released adopted leases give their capacity back')
})

t.test('an over-committed GPU counts as full, not as less than nothing for the others', async (t) => {
  const s = new Scheduler([0, 1])
  const half = project(0.01, 0.5)
  s.adopt({ experimentId: 'a', projectId: 'proj', cpuUnits: 10_000, gpus: [{ index: 0, units: 1_000_000 }] })
  s.adopt({ experimentId: 'b', projectId: 'proj', cpuUnits: 10_000, gpus: [{ index: 0, units: 500_000 }] })
  t.equal(s.capacity(half), 2, 'GPU 0 is over by half; GPU 1 still takes two')
  t.same(fill(s, half).length, 2)
})

t.test('capacity 0 asks nothing of the machine: the GPUs alone limit it', async (t) => {
  const s = new Scheduler([0, 1])
  s.reserve('whole', { id: 'cpu', capacity: 1 })
  const gpuOnly = project(0, 0.25)
  t.equal(s.capacity(gpuOnly), 8, 'a full machine, eight quarter-GPU slots')
  t.equal(fill(s, gpuOnly).length, 8)
  t.equal(s.capacity(gpuOnly), 0)
  t.equal(s.usage().cpuUnits, 1_000_000, 'and they hold none of the machine')
})

t.test('a lease naming a GPU this machine does not hand out never makes that GPU schedulable', async (t) => {
  const s = new Scheduler([0])
  s.adopt({ experimentId: 'x', projectId: 'p', cpuUnits: 1, gpus: [{ index: 3, units: 500_000 }] })
  s.release('x')
  t.equal(s.capacity({ capacity: 0.01, gpu_capacity: 0.5 }), 2, 'GPU 0 only: two halves')
  const leases = [s.reserve('a', { id: 'p', capacity: 0.01, gpu_capacity: 0.5 }), s.reserve('b', { id: 'p', capacity: 0.01, gpu_capacity: 0.5 })]
  t.same(leases.map((l) => l?.gpus[0]?.index), [0, 0])
  t.equal(s.reserve('c', { id: 'p', capacity: 0.01, gpu_capacity: 0.5 }), undefined, 'never GPU 3')
})

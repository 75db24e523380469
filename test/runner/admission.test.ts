import t from 'tap'
import { parseProjects } from '../../src/projects/schema.js'
import { Admission } from '../../src/runner/admission.js'
import { NoCapacityError } from '../../src/runner/errors.js'
import type { Refusal } from '../../src/scheduler/refusal.js'
import { Scheduler } from '../../src/scheduler/scheduler.js'
import { TestClock } from '../helpers/test-clock.js'

/** An Admission over real projects and a real Scheduler; `machine` says what the manager refuses. */
function rig(raw: Record<string, unknown>, gpus: number[] = []) {
  const { projects, problems } = parseProjects(raw, '/srv')
  const scheduler = new Scheduler(gpus)
  const logged: Array<{ level: string; msg: string }> = []
  const clock = new TestClock({ auto: false })
  const state: { machine?: Refusal } = {}
  const admission = new Admission({
    projects: { get: (id) => projects.get(id), problems: (id) => (problems.some((p) => p.projectId === id) ? problems.filter((p) => p.projectId === id) : undefined), file: '/srv/projects.json' },
    scheduler,
    experiments: {
      refusal: () => state.machine,
      start: async (id, body, project) => {
        if (!scheduler.reserve(String(body._id), project!)) throw new NoCapacityError(scheduler.refusal(project!))
        return undefined as never
      },
    },
    log: { info: (_o: object, msg: string) => logged.push({ level: 'info', msg }), warn: (_o: object, msg: string) => logged.push({ level: 'warn', msg }) } as never,
    clock,
  })
  const refusal = (fn: () => unknown): Refusal => {
    try {
      fn()
    } catch (err) {
      if (err instanceof NoCapacityError) return err.refusal
      throw err
    }
    throw new Error('not refused')
  }
  return { admission, scheduler, logged, clock, state, refusal }
}

const entry = { image: 'busybox:1', capacity: 0.5, results: '/r' }

t.test('each cause has its own reason', async (t) => {
  const r = rig({ ok: entry, bad: { ...entry, capacty: 1 }, gpu: { ...entry, gpu_capacity: 1 }, four: { ...entry, gpu_capacity: 4 } }, [0, 1])
  t.match(r.refusal(() => r.admission.capacity('nope')), { cause: 'unknown_project', reason: 'project nope is not in /srv/projects.json: press "Add to Machine" on its FGLab page, then fill in the entry' })
  t.match(r.refusal(() => r.admission.capacity('bad')), { cause: 'invalid_entry', reason: /^project bad's entry in \/srv\/projects\.json is left out: .*capacty: unknown key "capacty": did you mean "capacity"\?/ })
  t.match(r.refusal(() => r.admission.capacity('four')), { cause: 'too_few_gpus', reason: 'project four asks for 4 whole GPUs per experiment; this machine has 2' })
  t.equal(r.admission.capacity('ok'), 2)
  await r.admission.start('ok', { _id: 'a' })
  await r.admission.start('ok', { _id: 'b' })
  t.match(r.refusal(() => r.admission.capacity('ok')), { cause: 'full', reason: "busy: 2 experiment(s) hold this machine's capacity (machine 100%, GPU 0 0%, GPU 1 0% in use); project ok needs 50% of the machine" })
  await t.rejects(r.admission.start('ok', { _id: 'c' }), { message: 'No capacity available', refusal: { cause: 'full' } } as object as Error, 'a start that does not fit says the same')
  r.state.machine = { cause: 'shutting_down', reason: 'FGMachine is shutting down' }
  t.match(r.refusal(() => r.admission.capacity('gpu')), { cause: 'shutting_down' }, "the machine's own state comes first")
  await t.rejects(r.admission.start('gpu', { _id: 'd' }), { message: 'No capacity available', refusal: { cause: 'shutting_down' } } as object as Error)

  const none = rig({ gpu: { ...entry, gpu_capacity: 0.5 } })
  t.match(none.refusal(() => none.admission.capacity('gpu')), { cause: 'no_gpus', reason: /^project gpu asks for GPUs \(gpu_capacity 0\.5\) and this machine has none to give/ })
})

t.test('each refusal is logged once in a while, not at every question; busy at info, the rest at warn', async (t) => {
  const r = rig({ bad: { ...entry, capacty: 1 } })
  for (let i = 0; i < 5; i++) r.refusal(() => r.admission.capacity('bad'))
  r.refusal(() => r.admission.capacity('other'))
  t.equal(r.logged.length, 2, 'one line per cause and project')
  t.match(r.logged[0], { level: 'warn', msg: /^no capacity for FGLab: project bad's entry/ })
  r.clock.t += 5 * 60_000
  r.refusal(() => r.admission.capacity('bad'))
  t.equal(r.logged.length, 3, 'and again after five minutes')

  const many = rig({})
  for (let i = 0; i < 1500; i++) many.refusal(() => many.admission.capacity(`p${i}`))
  t.equal(many.logged.length, 1500)
  t.match(many.logged[0], { level: 'info', msg: /^no capacity for FGLab: project p0 is not in/ }, "a project of another machine's is ordinary: info")
  many.refusal(() => many.admission.capacity('p1499'))
  t.equal(many.logged.length, 1500, 'the latest are remembered')
  many.refusal(() => many.admission.capacity('p0'))
  t.equal(many.logged.length, 1501, 'the oldest were forgotten: what is remembered is bounded')

  const busy = rig({ ok: { ...entry, capacity: 1 } })
  await busy.admission.start('ok', { _id: 'a' })
  busy.refusal(() => busy.admission.capacity('ok'))
  t.match(busy.logged, [{ level: 'info', msg: /^no capacity for FGLab: busy/ }])
})

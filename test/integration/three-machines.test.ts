import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { machinesWorld, spawnMachine, type ChildMachine } from '../helpers/child-machine.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'
import { freePort } from '../helpers/ports.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()
const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()

/** Scores at once, notes at the end, a second or two of work between. */
const WORK = 'd="$FGLAB_RESULTS_DIR"; echo "{\\"_scores\\": {\\"n\\": $2}}" > "$d/scores.json"; sleep $(( $2 % 2 + 1 )); echo "{\\"_notes\\": \\"done $2\\"}" > "$d/notes.json"'
const EXPERIMENTS = 45

t.test('three FGMachines, one engine, one FGLab; one killed -9 mid-run and restarted: every experiment delivered once, each machine touching only its own', async (t) => {
  const { dir, fglab } = await machinesWorld(t, 'fgm-three-')
  // One project id, as in FGLab: each machine has it in its own projects.json ("Add to Machine" on each).
  const opts = await Promise.all(
    ['a', 'b', 'c'].map(async (name) => {
      const projectsPath = path.join(dir, `${name}.projects.json`)
      writeFileSync(projectsPath, JSON.stringify({ p: { image, command: 'sh', args: ['-c', WORK, 'exp'], options: 'plain', capacity: 0.25, results: path.join(dir, name, 'results') } }))
      return { fglabUrl: fglab.url, port: await freePort(), dataDir: path.join(dir, name, 'data'), projectsPath }
    }),
  )
  const machines: ChildMachine[] = await Promise.all(opts.map((o) => spawnMachine(o)))
  t.teardown(() => Promise.all(machines.map((m) => m.crash())))
  await fglab.waitFor(() => fglab.projects.size === 3, 20_000, 'three registrations')

  // FGLab's way: ask every machine's capacity at once, start on the first that has room.
  const chosen = new Map<string, number>()
  let held: Promise<void> = Promise.resolve()
  let inFlight = 0
  const submitOne = async (id: string, n: number) => {
    for (;;) {
      await held
      inFlight++
      const answers = await Promise.all(
        machines.map(async (m, i) => {
          const res = await fetch(`${m.url}/projects/p/capacity`).catch(() => undefined)
          return res?.status === 200 ? i : undefined
        }),
      )
      for (const i of answers.filter((i): i is number => i !== undefined)) {
        const res = await fetch(`${machines[i]!.url}/projects/p`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, _id: id }) }).catch(() => undefined)
        if (res?.status === 200) {
          chosen.set(id, i)
          inFlight--
          return
        }
      }
      inFlight--
      await new Promise((r) => setTimeout(r, 200))
    }
  }
  const ids = Array.from({ length: EXPERIMENTS }, objectId)
  const submitting = (async () => {
    for (const [n, id] of ids.entries()) await submitOne(id, n)
  })()

  // Machine b is killed -9 while it runs a few, and comes back on its data folder 3 s later.
  // (The kill comes when each experiment sent to b has its container running: one accepted but
  // not launched yet is reported fail, "FGMachine stopped before the experiment got a container".)
  await fglab.waitFor(() => [...chosen.values()].filter((i) => i === 1).length >= 4, 60_000, 'machine b running experiments')
  let resume = () => {}
  held = new Promise<void>((r) => (resume = r))
  await fglab.waitFor(() => inFlight === 0, 10_000, 'the submission under way')
  const onB = () => [...chosen].filter(([, i]) => i === 1).map(([id]) => id)
  const runningOnB = () => machines[1]!.lines.filter((l) => l.msg === 'container started').map((l) => String(l.experimentId))
  await fglab.waitFor(() => onB().every((id) => runningOnB().includes(id)), 30_000, "b's experiments running")
  const killedOnB = onB()
  await machines[1]!.crash()
  resume()
  await new Promise((r) => setTimeout(r, 3000))
  machines[1] = await spawnMachine(opts[1]!)

  await submitting
  await fglab.waitFinished(ids, 180_000)
  for (const [n, id] of ids.entries()) {
    const e = fglab.experiment(id)
    t.equal(e.fields._status, 'success', `experiment ${n}: success`, { fields: e.fields, machine: chosen.get(id) })
    t.same(e.fields._scores, { n }, `experiment ${n}: its scores`)
    t.equal(e.fields._notes, `done ${n}`, `experiment ${n}: its notes`)
    // A report FGLab took just as b was killed may come once more (FGLab's calls are idempotent); nothing else is doubled.
    const once = killedOnB.includes(id) ? e.finished <= 2 && e.started <= 2 : e.finished === 1 && e.started === 1
    t.ok(once, `experiment ${n}: started ${e.started}, finished ${e.finished}`)
  }
  t.ok(killedOnB.length >= 4, `${killedOnB.length} experiments were running on b when it was killed`)
  // Each machine launched only what was sent to it, and each container once.
  const launchedBy = machines.map((m) => m.lines.filter((l) => l.msg === 'container started').map((l) => String(l.experimentId)))
  const all = launchedBy.flat()
  t.equal(new Set(all).size, all.length, 'no container started twice')
  for (const [i, launched] of launchedBy.entries()) {
    t.ok(launched.every((id) => chosen.get(id) === i), `machine ${'abc'[i]} launched only its own experiments`)
  }
  // This test's containers only: other files share the engine and run their own meanwhile.
  const left = () =>
    docker('ps', '-a', '--filter', 'label=fgmachine.managed=true', '--format', '{{.Label "fgmachine.experiment"}}')
      .split('\n')
      .filter((e) => ids.includes(e))
  await fglab.waitFor(() => left().length === 0, 30_000, 'every container removed').catch(() => undefined)
  t.same(left(), [], 'every container removed, by its own machine')
})

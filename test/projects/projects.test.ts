import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { rename, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { parseProjects, projectTemplate } from '../../src/projects/schema.js'
import { ProjectStore, ProjectsFileError } from '../../src/projects/store.js'
import { until } from '../helpers/until.js'

const BASE = '/srv/fgmachine'
const P1 = '5f1e2d3c4b5a69788796a5b1'
const P2 = '5f1e2d3c4b5a69788796a5b2'
const local = { command: 'python', args: ['train.py'], options: 'double-dash', capacity: 0.5, results: 'results' }
const container = { image: 'busybox:1.36', capacity: 0.25, results: '/data/results' }

/** Parse one entry; the problems for it. */
const problemsOf = (entry: unknown) => parseProjects({ [P1]: entry }, BASE).problems

t.test('projects.example.json is valid: a container project and a local one whose program is in this repo', async (t) => {
  const root = path.resolve(import.meta.dirname, '../..')
  const { projects, problems } = parseProjects(JSON.parse(readFileSync(path.join(root, 'projects.example.json'), 'utf8')), root)
  t.strictSame(problems, [])
  const all = [...projects.values()]
  t.equal(all.filter((p) => p.image).length, 1, 'one container project')
  const local = all.find((p) => !p.image)!
  t.ok(existsSync(path.join(local.workDir!, local.args[0]!)), `${local.args[0]} is in ${local.workDir}`)
})

t.test('parseProjects', async (t) => {
  t.test('a good local project, with defaults and resolved paths', async (t) => {
    const { projects, problems } = parseProjects({ [P1]: { command: 'node', capacity: 1, results: 'out', cwd: 'code' } }, BASE)
    t.strictSame(problems, [])
    const p = projects.get(P1)
    t.equal(p?.id, P1)
    t.equal(p?.command, 'node')
    t.strictSame(p?.args, [])
    t.equal(p?.options, 'plain')
    t.equal(p?.keep_results, false)
    t.equal(p?.resultsDir, path.join(BASE, 'out'), 'relative results resolve against baseDir')
    t.equal(p?.workDir, path.join(BASE, 'code'), 'so does cwd')
  })

  t.test('absolute paths stay; a local project without cwd runs in baseDir', async (t) => {
    const p = parseProjects({ [P1]: { command: 'node', capacity: 1, results: '/abs/results' } }, BASE).projects.get(P1)
    t.equal(p?.resultsDir, '/abs/results')
    t.equal(p?.workDir, BASE)
  })

  t.test('numbers given as strings are accepted', async (t) => {
    const { projects, problems } = parseProjects({ [P1]: { ...container, capacity: '0.3', gpu_capacity: '0.5', gpu_command: '--gpu', cpus: '2' } }, BASE)
    t.strictSame(problems, [])
    t.equal(projects.get(P1)?.capacity, 0.3)
    t.equal(projects.get(P1)?.gpu_capacity, 0.5)
    t.equal(projects.get(P1)?.cpus, 2)
  })

  t.test('args as one string becomes a one-element list', async (t) => {
    t.strictSame(parseProjects({ [P1]: { ...local, args: 'train' } }, BASE).projects.get(P1)?.args, ['train'])
    t.strictSame(parseProjects({ [P1]: { ...local, args: '' } }, BASE).projects.get(P1)?.args, [])
    t.strictSame(parseProjects({ [P1]: { ...local, args: ['a', 1, true] } }, BASE).projects.get(P1)?.args, ['a', '1', 'true'])
  })

  t.test('a bad entry is reported and left out; the good ones are kept', async (t) => {
    const { projects, problems } = parseProjects({ [P1]: { ...local, capacity: 2 }, [P2]: local }, BASE)
    t.strictSame([...projects.keys()], [P2])
    t.strictSame(problems, [{ projectId: P1, field: 'capacity', message: 'capacity must be in [0, 1], e.g. 0.5' }])
  })

  t.test('capacity out of range', async (t) => {
    for (const capacity of [-0.5, 1.01, 2, '1.5']) {
      t.strictSame(problemsOf({ ...local, capacity }), [{ projectId: P1, field: 'capacity', message: 'capacity must be in [0, 1], e.g. 0.5' }], `capacity ${capacity}`)
    }
    t.strictSame(problemsOf({ ...local, capacity: 'half' }).map((p) => p.field), ['capacity'], 'a word is not a number')
    t.strictSame(problemsOf({ ...local, capacity: undefined }).map((p) => p.field), ['capacity'], 'capacity is required')
    t.strictSame(problemsOf({ ...local, capacity: 1 }), [], '1 is the whole machine')
    t.strictSame(problemsOf({ ...local, capacity: 0 }), [{ projectId: P1, field: 'capacity', message: 'capacity 0 (no limit from the machine) needs gpu_capacity to limit it instead' }], '0 without GPUs would be unlimited')
    t.strictSame(problemsOf({ ...local, capacity: '0', gpu_capacity: 0.5, gpu_command: '--gpu' }), [], '0 with gpu_capacity: the GPUs limit it (the seed\'s inclusive range)')
  })

  t.test('gpu_capacity: a fraction or whole GPUs', async (t) => {
    t.strictSame(problemsOf({ ...local, gpu_capacity: 2, gpu_command: '--gpu' }), [])
    t.strictSame(problemsOf({ ...local, gpu_capacity: 1.5, gpu_command: '--gpu' }).map((p) => p.field), ['gpu_capacity'])
    t.strictSame(problemsOf({ ...local, gpu_capacity: 0.5 }), [
      { projectId: P1, field: 'gpu_command', message: 'gpu_command is required with gpu_capacity for a local project' },
    ])
    t.strictSame(problemsOf({ ...container, gpu_capacity: 0.5 }), [], 'a container project needs no gpu_command')
  })

  t.test('an unknown options style', async (t) => {
    t.strictSame(problemsOf({ ...local, options: 'triple-dash' }), [
      { projectId: P1, field: 'options', message: 'options must be one of plain, single-dash, double-dash, function' },
    ])
  })

  t.test('a local project needs a command; a container project does not', async (t) => {
    t.strictSame(problemsOf({ capacity: 0.5, results: 'r' }), [
      { projectId: P1, field: 'command', message: 'command is required for a local project (or set image to run it in a container)' },
    ])
    const empty = problemsOf({ command: '', capacity: 0.5, results: 'r' })
    t.ok(empty.some((p) => p.message === 'command must not be empty'), 'an empty command is no command')
    t.ok(empty.every((p) => p.field === 'command'))
    const { projects, problems } = parseProjects({ [P1]: container }, BASE)
    t.strictSame(problems, [])
    t.equal(projects.get(P1)?.command, undefined)
    t.equal(projects.get(P1)?.workDir, undefined, "a container's cwd is left to the image")
  })

  t.test('results is required: its absence is called missing', async (t) => {
    t.strictSame(problemsOf({ command: 'node', capacity: 0.5 }), [
      { projectId: P1, field: 'results', message: 'results is missing: it must be the folder experiments write into, e.g. "/data/results"' },
    ])
  })

  t.test('a misspelled key refuses its entry, with the key it was likely meant as', async (t) => {
    const problems = problemsOf({ image: 'busybox:1.36', capacty: 0.5, results: '/r', shm_szie: '8g', gpu_capcity: 1, keep_result: true })
    t.strictSame(problems, [
      { projectId: P1, field: 'capacity', message: 'capacity is missing: it must be a number' },
      { projectId: P1, field: 'capacty', message: 'unknown key "capacty": did you mean "capacity"?' },
      { projectId: P1, field: 'shm_szie', message: 'unknown key "shm_szie": did you mean "shm_size"?' },
      { projectId: P1, field: 'gpu_capcity', message: 'unknown key "gpu_capcity": did you mean "gpu_capacity"?' },
      { projectId: P1, field: 'keep_result', message: 'unknown key "keep_result": did you mean "keep_results"?' },
    ])
    t.equal(parseProjects({ [P1]: { ...container, shm_szie: '8g' } }, BASE).projects.size, 0, 'not loaded without it: it would run with 64 MB of /dev/shm')
    t.match(problemsOf({ ...container, wholly_unknown: 1 }), [{ field: 'wholly_unknown', message: /^unknown key "wholly_unknown" \(README/ }], 'no guess when nothing is close')
    t.match(problemsOf({ ...container, log: { max_file: 2 } }), [{ field: 'log.max_file', message: 'unknown key "max_file": did you mean "max_files"?' }], 'nested keys too')
  })

  t.test('container settings on a local project refuse it: they would be ignored', async (t) => {
    t.strictSame(problemsOf({ ...local, shm_size: '8g', init: false }), [
      { projectId: P1, field: 'shm_size', message: 'shm_size is for container projects (with "image"): a local process cannot use it; remove it, or add "image"' },
      { projectId: P1, field: 'init', message: 'init is for container projects (with "image"): a local process cannot use it; remove it, or add "image"' },
    ])
    t.strictSame(problemsOf({ ...local, env: { A: '1' } }), [], 'env is for both')
  })

  t.test('a bad image name is found when projects.json loads, not when an experiment starts', async (t) => {
    t.match(problemsOf({ ...container, image: 'PyTorch/pytorch:2.5' }), [{ field: 'image', message: /^image "PyTorch\/pytorch:2\.5" .*lowercase/ }])
    t.match(problemsOf({ ...container, image: 'https://ghcr.io/me/model:1' }), [{ field: 'image', message: 'image "https://ghcr.io/me/model:1" must be an image reference, not a URL: write "ghcr.io/me/model:1"' }])
    t.strictSame(problemsOf({ ...container, image: 'nvcr.io/nvidia/pytorch:24.10-py3' }), [])
    t.strictSame(problemsOf({ ...container, image: 'localhost:5000/team/model@sha256:' + 'a'.repeat(64) }), [])
  })

  t.test('enums are checked: boolean, options, pull, ipc, ulimit names', async (t) => {
    t.match(problemsOf({ ...local, boolean: 'optinal' }), [{ field: 'boolean', message: /boolean must be "optional"/ }])
    t.match(problemsOf({ ...container, pull: 'alwys' }), [{ field: 'pull', message: 'pull must be one of missing, always' }])
    t.match(problemsOf({ ...container, ipc: 'hots' }), [{ field: 'ipc', message: /ipc must be one of private, shareable, host, none/ }])
    t.strictSame(problemsOf({ ...container, ipc: 'container:peer' }), [])
    t.match(problemsOf({ ...container, ulimits: { nofle: 1024 } }), [{ field: 'ulimits.nofle', message: 'unknown ulimit "nofle": did you mean "nofile"?' }])
    t.match(problemsOf({ ...container, ulimits: { stack: 'big' } }), [{ field: 'ulimits.stack', message: /must be a number, "soft:hard"/ }])
    t.match(problemsOf({ ...container, ulimits: { nofile: '4096:1024' } }), [{ field: 'ulimits.nofile', message: 'soft limit 4096 is above the hard limit 1024: the soft one must not exceed the hard one' }])
    t.match(problemsOf({ ...container, ulimits: { nofile: { soft: -1, hard: 1024 } } }), [{ field: 'ulimits.nofile', message: /soft limit unlimited is above/ }])
    t.match(problemsOf({ ...container, ulimits: { nofile: { soft: 1, hard: 2, hrad: 3 } } }), [{ field: 'ulimits.nofile', message: 'unknown key "hrad": did you mean "hard"?' }])
    t.match(problemsOf({ ...container, log: { max_size: 0 } }), [{ field: 'log.max_size', message: /at least 1m/ }])
  })

  t.test('container options: init on by default, ipc, ulimits in every form, log rotation by default', async (t) => {
    const p = parseProjects({ [P1]: container, [P2]: { ...container, init: false, ipc: 'host', pull: 'always', prepull: true, ulimits: { memlock: -1, stack: '67108864', nofile: '1024:4096', core: { soft: 0 }, rtprio: 'unlimited' }, log: { max_size: '10m', max_files: '2' } } }, BASE).projects
    const plain = p.get(P1)!
    t.equal(plain.init, true, 'an init by default: SIGTERM reaches the program')
    t.equal(plain.pull, 'missing')
    t.equal(plain.prepull, false)
    t.strictSame(plain.log, { max_size: 100 * 1024 * 1024, max_files: 3 }, 'logs rotate by default')
    const set = p.get(P2)!
    t.equal(set.init, false)
    t.equal(set.ipc, 'host')
    t.equal(set.pull, 'always')
    t.equal(set.prepull, true)
    t.strictSame(set.ulimits, { memlock: { soft: -1, hard: -1 }, stack: { soft: 67108864, hard: 67108864 }, nofile: { soft: 1024, hard: 4096 }, core: { soft: 0, hard: 0 }, rtprio: { soft: -1, hard: -1 } })
    t.strictSame(set.log, { max_size: 10 * 1024 * 1024, max_files: 2 })
  })

  t.test('shm_size and memory take Docker sizes', async (t) => {
    const p = parseProjects({ [P1]: { ...container, shm_size: '8g', memory: '512m' } }, BASE).projects.get(P1)
    t.equal(p?.shm_size, 8 * 1024 ** 3)
    t.equal(p?.memory, 512 * 1024 ** 2)
    const n = parseProjects({ [P1]: { ...container, shm_size: 67108864, memory: '1.5g' } }, BASE).projects.get(P1)
    t.equal(n?.shm_size, 67108864, 'a number is bytes')
    t.equal(n?.memory, 1.5 * 1024 ** 3)
    t.strictSame(problemsOf({ ...container, memory: 'lots' }), [
      { projectId: P1, field: 'memory', message: 'memory must be a size like "8g", "512m" or a number of bytes' },
    ])
    t.strictSame(problemsOf({ ...container, shm_size: -1 }).map((p) => p.field), ['shm_size'])
  })

  t.test('env values are stringified', async (t) => {
    const p = parseProjects({ [P1]: { ...container, env: { A: 1, B: true, C: 'x' } } }, BASE).projects.get(P1)
    t.strictSame(p?.env, { A: '1', B: 'true', C: 'x' })
    t.strictSame(problemsOf({ ...container, env: { A: { nested: 1 } } }).map((p) => p.field), ['env.A'])
  })

  t.test('a project id that is not safe is left out', async (t) => {
    const { projects, problems } = parseProjects({ '../etc': local, [P2]: local }, BASE)
    t.strictSame([...projects.keys()], [P2])
    t.equal(problems.length, 1)
    t.equal(problems[0]?.projectId, '../etc')
  })

  t.test('a file that is not an object', async (t) => {
    for (const raw of [[], null, 'text', 3]) {
      const { projects, problems } = parseProjects(raw, BASE)
      t.equal(projects.size, 0)
      t.strictSame(problems, [{ projectId: '*', field: '', message: 'projects.json must hold an object keyed by FGLab project id' }], JSON.stringify(raw))
    }
  })

  t.test("the template is reported as invalid until it is filled in", async (t) => {
    const { projects, problems } = parseProjects({ [P1]: projectTemplate() }, BASE)
    t.equal(projects.size, 0)
    t.ok(problems.length > 0)
    t.ok(problems.every((p) => p.projectId === P1))
  })
})

/** A pino logger writing JSON lines into an array. */
function sinkLogger() {
  const lines: Array<Record<string, unknown> & { level: number; msg: string }> = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line))
      done()
    },
  })
  return { log: pino({ level: 'debug' }, sink), lines }
}

const ERROR = 50
const WARN = 40

function tempFile(t: Test): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-projects-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return path.join(dir, 'projects.json')
}

t.test('ProjectStore', async (t) => {
  t.test('reload of a good file', async (t) => {
    const file = tempFile(t)
    writeFileSync(file, JSON.stringify({ [P1]: local, [P2]: container }))
    const { log, lines } = sinkLogger()
    const store = new ProjectStore(file, log, '/base')
    t.equal(await store.reload(), true)
    t.strictSame(store.all().map((p) => p.id).sort(), [P1, P2].sort())
    t.equal(store.get(P1)?.resultsDir, '/base/results')
    t.strictSame(store.raw(), { [P1]: local, [P2]: container })
    t.strictSame(lines.filter((l) => l.level >= WARN), [])
    const loaded = lines.find((l) => l.msg === 'projects loaded')
    t.strictSame(loaded?.projects, [P1, P2])
    t.equal(loaded?.invalid, 0)
  })

  t.test('a missing file is an empty configuration, with a warning', async (t) => {
    const file = tempFile(t)
    const { log, lines } = sinkLogger()
    const store = new ProjectStore(file, log)
    t.equal(await store.reload(), true)
    t.equal(store.all().length, 0)
    t.ok(lines.some((l) => l.level === WARN && l.file === file))
  })

  t.test('a file that is not JSON keeps the last good config and logs an error', async (t) => {
    const file = tempFile(t)
    writeFileSync(file, JSON.stringify({ [P1]: local }))
    const { log, lines } = sinkLogger()
    const store = new ProjectStore(file, log)
    t.ok(await store.reload())
    let changes = 0
    store.on('change', () => changes++)
    writeFileSync(file, '{ "broken": ')
    t.equal(await store.reload(), false)
    t.ok(store.get(P1), 'the last good project is still there')
    t.strictSame(Object.keys(store.raw()), [P1])
    t.equal(changes, 0, 'no change is announced')
    const err = lines.find((l) => l.level === ERROR)
    t.ok(err, 'an error is logged')
    t.equal(err?.file, file)
    t.match(err?.msg, /not valid JSON/)
    t.type(err?.reason, 'string')

    writeFileSync(file, '[1, 2]')
    t.equal(await store.reload(), false, 'an array is refused the same way')
    t.ok(store.get(P1))
  })

  t.test('with no good configuration ever loaded, a bad file says no project can run (there is no "last good" one)', async (t) => {
    const file = tempFile(t)
    writeFileSync(file, '{ "broken": ')
    const { log, lines } = sinkLogger()
    const store = new ProjectStore(file, log)
    t.equal(await store.reload(), false)
    t.match(lines.find((l) => l.level === ERROR)?.msg, /^projects\.json is not valid JSON; no project can run until it is fixed$/)
    writeFileSync(file, JSON.stringify({ [P1]: local }))
    t.ok(await store.reload())
    writeFileSync(file, '{ "broken": ')
    await store.reload()
    t.match(lines.filter((l) => l.level === ERROR).at(-1)?.msg, /keeping the last good configuration$/)
  })

  t.test('the same text is applied (and its problems logged) once: "Add to Machine" and the watch seeing its write', async (t) => {
    const file = tempFile(t)
    writeFileSync(file, JSON.stringify({ [P1]: local }))
    const { log, lines } = sinkLogger()
    const store = new ProjectStore(file, log)
    await store.reload()
    let changes = 0
    store.on('change', () => changes++)
    t.equal(await store.addTemplate(P2), true)
    await store.reload() // what the watch does when it sees that write
    const leftOut = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(`project ${P2} left out`))
    t.equal(leftOut.length, new Set(leftOut.map((l) => l.msg)).size, 'each problem of the blank template once')
    t.equal(lines.filter((l) => l.msg === 'projects loaded').length, 2, 'loaded at start and after the template: not a third time')
    t.equal(changes, 1)
    await store.reload({ force: true })
    t.equal(changes, 2, 'forced (the machine\'s checks changed): applied again')
  })

  t.test('a file with one bad entry keeps the good ones and names the bad one', async (t) => {
    const file = tempFile(t)
    writeFileSync(file, JSON.stringify({ [P1]: { ...local, options: 'nope' }, [P2]: local }))
    const { log, lines } = sinkLogger()
    const store = new ProjectStore(file, log)
    t.equal(await store.reload(), true)
    t.equal(store.get(P1), undefined)
    t.ok(store.get(P2))
    const err = lines.find((l) => l.level === ERROR)
    t.equal(err?.projectId, P1)
    t.equal(err?.field, 'options')
    t.match(err?.msg, `project ${P1} left out: options: options must be one of`)
    t.equal(lines.find((l) => l.msg === 'projects loaded')?.invalid, 1)
    t.ok(P1 in store.raw(), 'FGLab is still told about the bad entry')
  })

  t.test('addTemplate creates the file when it is missing', async (t) => {
    const file = path.join(tempFile(t), '..', 'nested', 'projects.json')
    const { log } = sinkLogger()
    const store = new ProjectStore(file, log)
    t.equal(await store.addTemplate(P1), true)
    t.ok(existsSync(file))
    t.strictSame(JSON.parse(readFileSync(file, 'utf8')), { [P1]: { cwd: '', command: '', args: [], options: '', capacity: '', results: '' } })
    t.ok(P1 in store.raw(), 'the store reloads it')
    t.equal(store.get(P1), undefined, 'but the blank template offers nothing yet')
  })

  t.test('addTemplate keeps other entries and refuses an existing id', async (t) => {
    const file = tempFile(t)
    const original = JSON.stringify({ [P1]: local }, null, 2)
    writeFileSync(file, original)
    const { log } = sinkLogger()
    const store = new ProjectStore(file, log)
    await store.reload()
    t.equal(await store.addTemplate(P1), false)
    t.equal(readFileSync(file, 'utf8'), original, 'the file is untouched')
    t.equal(await store.addTemplate(P2), true)
    const written = JSON.parse(readFileSync(file, 'utf8'))
    t.strictSame(written[P1], local, 'the other entry is kept as it was')
    t.strictSame(Object.keys(written), [P1, P2])
    t.ok(store.get(P1), 'the good project still runs')
  })

  t.test('concurrent addTemplate calls do not lose each other', async (t) => {
    const file = tempFile(t)
    const { log } = sinkLogger()
    const store = new ProjectStore(file, log)
    const ids = ['a1', 'a2', 'a3', 'a4', 'a5']
    t.strictSame(await Promise.all(ids.map((id) => store.addTemplate(id))), ids.map(() => true))
    t.strictSame(Object.keys(JSON.parse(readFileSync(file, 'utf8'))).sort(), ids)
  })

  t.test('addTemplate refuses a file that does not parse and leaves it untouched', async (t) => {
    const file = tempFile(t)
    const { log } = sinkLogger()
    const store = new ProjectStore(file, log)
    for (const text of ['{ "half": ', '[]', 'null']) {
      writeFileSync(file, text)
      const err: unknown = await store.addTemplate(P1).then(
        () => undefined,
        (e: unknown) => e,
      )
      t.type(err, ProjectsFileError, JSON.stringify(text))
      t.match((err as Error).message, /^projects\.json cannot be updated: .*; fix the file first$/)
      t.equal(readFileSync(file, 'utf8'), text, 'the file is untouched')
    }
    t.equal(await store.addTemplate(P2).catch(() => 'rejected'), 'rejected', 'a failed call does not wedge the queue')
    writeFileSync(file, '{}')
    t.equal(await store.addTemplate(P2), true, 'and once fixed it works again')
  })

  t.test('watch() picks up a change written to the file', async (t) => {
    const file = tempFile(t)
    writeFileSync(file, JSON.stringify({ [P1]: local }))
    const { log } = sinkLogger()
    const store = new ProjectStore(file, log)
    t.teardown(() => store.close())
    await store.reload()
    const changes: Array<Record<string, unknown>> = []
    store.on('change', (raw) => changes.push(raw))
    await store.watch()
    await writeFile(file, JSON.stringify({ [P1]: local, [P2]: { ...local, capacity: 0.1 } }))
    await until(() => store.get(P2) !== undefined, 'the new project to appear', 5000)
    t.equal(store.get(P2)?.capacity, 0.1)
    t.ok(changes.some((raw) => P2 in raw), "'change' is emitted with the new file")
  })

  t.test('watch() picks up a file replaced by rename, as editors save', async (t) => {
    const file = tempFile(t)
    writeFileSync(file, JSON.stringify({ [P1]: local }))
    const { log } = sinkLogger()
    const store = new ProjectStore(file, log)
    t.teardown(() => store.close())
    await store.reload()
    await store.watch()
    await writeFile(file + '.tmp', JSON.stringify({ [P2]: local }))
    await rename(file + '.tmp', file)
    await until(() => store.get(P2) !== undefined, 'the replaced file to be loaded', 5000)
    t.equal(store.get(P1), undefined)
  })

  t.test('watch() picks up a file created after it started', async (t) => {
    const file = tempFile(t)
    const { log } = sinkLogger()
    const store = new ProjectStore(file, log)
    t.teardown(() => store.close())
    await store.reload()
    await store.watch()
    await writeFile(file, JSON.stringify({ [P1]: local }))
    await until(() => store.get(P1) !== undefined, 'the new file to be loaded', 5000)
  })
})

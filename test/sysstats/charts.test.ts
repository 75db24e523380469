import { execFileSync } from 'node:child_process'
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import { CHART_FILE, SystemCharts, type WatchTarget } from '../../src/sysstats/charts.js'
import { GpuReader, type Usage } from '../../src/sysstats/sources.js'
import { nodeDisk } from '../../src/util/disk.js'
import { TestClock } from '../helpers/test-clock.js'
import { until } from '../helpers/until.js'

const ID = '5f0c1e2d3a4b5c6d7e8f9012'
const GIB = 1024 ** 3

/** Resolves once `cond` holds, letting I/O and promises run meanwhile. */
function rig(t: Test, opts: { gpus?: GpuReader; clock?: TestClock } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-charts-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const stateDir = path.join(dir, 'experiments')
  const resultsDir = path.join(dir, 'results', ID)
  mkdirSync(resultsDir, { recursive: true })
  const clock = opts.clock ?? new TestClock({ auto: false })
  const make = () =>
    new SystemCharts({ dir: stateDir, disk: nodeDisk, log: pino({ level: 'silent' }), clock, gpus: opts.gpus, sampleMs: 5000, chartEveryMs: 60_000, saveEveryMs: 20_000 })
  // A program that uses one core and a growing amount of memory; `running` false ends it.
  const program = { running: true, reads: 0, fail: false, cpuNs: 0, memory: GIB }
  const target = (over: Partial<WatchTarget> = {}): WatchTarget => ({
    experimentId: ID,
    resultsDir,
    gpus: [],
    startedMs: clock.now(),
    title: 'mnist · experiment 5f0c',
    source: async (): Promise<Usage | undefined> => {
      program.reads++
      if (program.fail) throw new Error('Docker is not reachable')
      if (!program.running) return undefined
      return { cpuNs: program.cpuNs, memoryBytes: program.memory }
    },
    ...over,
  })
  /** Move time on by `ms` (the program keeps one core busy meanwhile) and wait for the reading it brings. */
  const step = async (ms: number) => {
    await until(() => clock.pending === 1, 'the watch to wait for its next reading', 5000, 1)
    const before = program.reads
    program.cpuNs += ms * 1e6
    program.memory += 0.1 * GIB
    clock.advance(ms)
    await until(() => program.reads > before, 'a reading', 5000, 1)
    await new Promise((r) => setTimeout(r, 5))
  }
  return { dir, stateDir, resultsDir, clock, make, program, target, step, stateFile: path.join(stateDir, `${ID}.system.json`) }
}

t.test('samples 1 s, 2 s and 4 s in, then every interval; at the end the chart and readable fields', async (t) => {
  const r = rig(t)
  const charts = r.make()
  charts.watch(r.target())
  await until(() => r.clock.pending === 1, 'the first wait', 5000, 1)
  t.same(r.clock.sleeps, [1000], 'the first reading a second in')
  await r.step(1000)
  await r.step(2000)
  await r.step(4000)
  await r.step(5000)
  t.same(r.clock.sleeps.slice(0, 5), [1000, 2000, 4000, 5000, 5000])
  const fields = await charts.finish(ID, r.resultsDir)
  t.equal(fields.system_peak_memory, '1.4 GiB', 'the largest reading')
  t.match(fields.system_mean_cpu, /^100 % \(1\.0 cores\)$/, 'one core busy throughout')
  t.notOk('system_gpu_util_mean' in fields, 'no GPUs: no GPU fields')
  const svg = readFileSync(path.join(r.resultsDir, CHART_FILE), 'utf8')
  t.match(svg, /^(<\?xml[^>]*\?>\s*)?<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/)
  t.match(svg, /CPU/)
  t.match(svg, /Memory/)
  t.match(svg, /mnist · experiment 5f0c/)
  t.notMatch(svg, /GPU utilisation/i)
  // Sent again only if it changed: a second finish (a restart after the end) leaves the file as it is.
  const mtime = statSync(path.join(r.resultsDir, CHART_FILE)).mtimeMs
  await new Promise((res) => setTimeout(res, 20))
  const again = await charts.finish(ID, r.resultsDir)
  t.same(again, fields, 'from the samples written down, the same fields')
  t.equal(statSync(path.join(r.resultsDir, CHART_FILE)).mtimeMs, mtime, 'the same chart is not written again')
  await charts.forget(ID)
  t.notOk(existsSync(r.stateFile), 'forgotten once done')
})

t.test('a run that ends before its first reading: no chart, no fields', async (t) => {
  const r = rig(t)
  const charts = r.make()
  charts.watch(r.target())
  const fields = await charts.finish(ID, r.resultsDir)
  t.same(fields, {})
  t.notOk(existsSync(path.join(r.resultsDir, CHART_FILE)))
})

t.test('sampling stops by itself when the program no longer runs, and goes on through failed readings', async (t) => {
  const r = rig(t)
  const charts = r.make()
  charts.watch(r.target())
  await r.step(1000)
  r.program.fail = true
  await r.step(2000)
  t.equal(r.clock.pending, 1, 'a failed reading: the next one is still due')
  r.program.fail = false
  r.program.running = false
  await r.step(4000)
  await until(() => r.clock.pending === 0, 'the watch to end', 5000, 1)
  t.pass('no more readings once it ended')
  const fields = await charts.finish(ID, r.resultsDir)
  t.ok(fields.system_peak_memory, 'the reading before the failure counts')
})

t.test('a long run: the chart is written every chartEveryMs while it runs, the samples every saveEveryMs', async (t) => {
  const r = rig(t)
  const charts = r.make()
  charts.watch(r.target())
  await r.step(1000)
  await r.step(2000)
  await r.step(4000)
  t.notOk(existsSync(r.stateFile), 'nothing written down in the first 20 s')
  for (let i = 0; i < 4; i++) await r.step(5000)
  await until(() => existsSync(r.stateFile), 'the samples written down', 5000, 1)
  t.notOk(existsSync(path.join(r.resultsDir, CHART_FILE)), 'no chart before a minute')
  for (let i = 0; i < 8; i++) await r.step(5000)
  await until(() => existsSync(path.join(r.resultsDir, CHART_FILE)), 'the chart of a running experiment', 5000, 1)
  t.match(readFileSync(path.join(r.resultsDir, CHART_FILE), 'utf8'), /<svg/)
  await charts.close()
})

t.test('after a restart: the samples go on from what was written down, and the end uses them all', async (t) => {
  const r = rig(t)
  const first = r.make()
  first.watch(r.target())
  await r.step(1000)
  await r.step(2000)
  await first.close() // FGMachine shuts down; the container runs on
  t.ok(existsSync(r.stateFile), 'written down at shutdown')
  const saved = JSON.parse(readFileSync(r.stateFile, 'utf8')) as { series: { samples: number } }
  t.equal(saved.series.samples, 2)

  const second = r.make()
  r.program.memory = 5 * GIB
  second.watch(r.target())
  await r.step(1000)
  await r.step(2000)
  const fields = await second.finish(ID, r.resultsDir)
  t.equal(fields.system_peak_memory, '5.2 GiB', 'the readings after the restart count')
  t.ok(fields.system_mean_cpu, 'and CPU goes on from a fresh baseline')

  // A restart after the end, before the reports: the fields again, from the file alone.
  await second.close()
  const third = r.make()
  t.same(await third.finish(ID, r.resultsDir), fields)
})

t.test('an unreadable samples file is left out, not fatal', async (t) => {
  const r = rig(t)
  mkdirSync(r.stateDir, { recursive: true })
  await nodeDisk.writeAtomic(r.stateFile, '{"title": "x", "series": {"v": 99}}')
  const charts = r.make()
  t.same(await charts.finish(ID, r.resultsDir), {})
  charts.watch(r.target())
  await r.step(1000)
  t.ok((await charts.finish(ID, r.resultsDir)).system_peak_memory, 'a fresh series instead')
})

t.test("GPU experiments: their GPUs' readings, by host index, in the chart and the fields", async (t) => {
  const clock = new TestClock({ auto: false })
  const smi = async () =>
    '0, GPU-aaaaaaaa-0000-0000-0000-000000000000, NVIDIA H100, 81559, 20480, 87, Disabled\n' +
    '1, GPU-bbbbbbbb-0000-0000-0000-000000000000, NVIDIA H100, 81559, 1024, 3, Disabled\n' +
    '2, GPU-cccccccc-0000-0000-0000-000000000000, NVIDIA H100, 81559, 40960, 50, Disabled\n'
  const r = rig(t, { clock, gpus: new GpuReader(pino({ level: 'silent' }), clock, 2500, smi) })
  const charts = r.make()
  charts.watch(r.target({ gpus: [0, 2] }))
  await r.step(1000)
  await r.step(2000)
  const fields = await charts.finish(ID, r.resultsDir)
  t.match(fields.system_gpu_util_mean, /^69 % \(GPU 0: 87 %, GPU 2: 50 %\)$/, 'its two GPUs, not GPU 1')
  t.match(fields.system_gpu_util_peak, /87 %/)
  t.match(fields.system_gpu_memory_peak, /^40 GiB of 79\.6 GiB/)
  const svg = readFileSync(path.join(r.resultsDir, CHART_FILE), 'utf8')
  t.match(svg, /GPU utilisation/i)
  t.match(svg, /GPU 0/)
  t.match(svg, /GPU 2/)
  t.notMatch(svg, /GPU 1\b/)
})

t.test("the experiment's folder is its own: a link or a pipe named like the chart is left alone, never followed or read", async (t) => {
  for (const kind of ['symlink', 'fifo'] as const) {
    const r = rig(t)
    const victim = path.join(r.dir, 'victim.json')
    writeFileSync(victim, '{"keep": true}')
    if (kind === 'symlink') symlinkSync(victim, path.join(r.resultsDir, CHART_FILE))
    else execFileSync('mkfifo', [path.join(r.resultsDir, CHART_FILE)])
    const charts = r.make()
    charts.watch(r.target())
    await r.step(1000)
    const fields = await charts.finish(ID, r.resultsDir)
    t.ok(fields.system_peak_memory, `${kind}: the fields all the same`)
    t.equal(readFileSync(victim, 'utf8'), '{"keep": true}', `${kind}: what it points at is untouched`)
    t.ok(lstatSync(path.join(r.resultsDir, CHART_FILE))[kind === 'symlink' ? 'isSymbolicLink' : 'isFIFO'](), `${kind}: left as it was`)
  }
})

t.test('a write that fails (disk full a moment) is said and sampling goes on; a reading that hangs does not hold up the end', async (t) => {
  const r = rig(t)
  let refuse = 1
  const disk = { ...nodeDisk, writeAtomic: (file: string, data: string) => (refuse-- > 0 ? Promise.reject(new Error('ENOSPC (test)')) : nodeDisk.writeAtomic(file, data)) }
  const charts = new SystemCharts({ dir: r.stateDir, disk, log: pino({ level: 'silent' }), clock: r.clock, sampleMs: 5000, chartEveryMs: 0, saveEveryMs: 5000 })
  charts.watch(r.target())
  await r.step(1000)
  await r.step(2000)
  await r.step(4000) // the first save, refused
  await r.step(5000)
  await r.step(5000) // saved
  await until(() => existsSync(r.stateFile), 'the samples written down after all', 5000, 1)
  t.notOk(existsSync(path.join(r.resultsDir, CHART_FILE)), 'chartEveryMs 0: no chart while it runs')
  // The program's reading never comes back (Docker wedged): the end goes on without it.
  let hang = false
  const source = r.target().source
  charts.watch(r.target({ source: () => (hang ? new Promise(() => {}) : source()) }))
  await r.step(1000)
  hang = true
  await until(() => r.clock.pending === 1, 'the next wait', 5000, 1)
  r.clock.advance(2000)
  const t0 = Date.now()
  const alive = setTimeout(() => {}, 10_000) // the stop's own timer does not keep a process alive
  const fields = await charts.finish(ID, r.resultsDir)
  clearTimeout(alive)
  t.ok(Date.now() - t0 < 30_000, 'finished without the hung reading (it waits 2 s for it at most)')
  t.ok(fields.system_peak_memory)
})

t.test('at start, the samples of experiments no record owns (left by a crash once they were done) are removed', async (t) => {
  const r = rig(t)
  mkdirSync(r.stateDir, { recursive: true })
  const kept = 'aaaaaaaaaaaaaaaaaaaaaaaa'
  for (const id of [ID, kept]) writeFileSync(path.join(r.stateDir, `${id}.system.json`), '{}')
  writeFileSync(path.join(r.stateDir, `${kept}.json`), '{}')
  await r.make().sweep(new Set([kept]))
  t.notOk(existsSync(r.stateFile), 'the orphan is gone')
  t.ok(existsSync(path.join(r.stateDir, `${kept}.system.json`)), "a record's own samples stay")
  t.ok(existsSync(path.join(r.stateDir, `${kept}.json`)), 'other files are not touched')
})

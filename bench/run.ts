/**
 * `npm run bench`: short experiments through the real FGMachine (a child
 * `node dist/server.js` against an in-process fake FGLab, submitted by an
 * FGLab-like dispatcher: capacity, then start) against the same workloads as
 * plain `docker run --rm`s, BENCH_CONCURRENCY in flight for both. Two
 * workloads: realistic (results files, a chart, notes rewritten, a PNG, output)
 * and light (a sleep, two small files). Per workload: wall times, the ratio
 * service/plain, the service's peak RSS, its CPU ms per experiment, the latency
 * it adds, the dispatcher's counts and where an experiment's time goes.
 * Exit 0 (a measurement, not a test), 1 if any result was lost, 2 if the bench
 * could not run. See bench/README.md.
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { FakeFglab, type RecordedCall } from '../test/helpers/fake-fglab.js'
import { objectId } from '../test/helpers/ids.js'
import { ensureBusyboxImage } from '../test/helpers/images.js'
import { addStats, dispatchBatch, newStats, type DispatchStats, type Submission } from './dispatcher.js'
import { buildIfNeeded, dockerRun, fmtS, machineDescription, mean, median, numEnv, pct, runBench, runId, SERVICE_NODE_ARGS, sleep, slidingWindow, tmp } from './lib.js'
import { procCpuMs, procStatusKb, startService, type Service } from './service.js'
import { light, optionsFor, realistic, type Options, type Workload, type WorkloadName } from './workloads.js'

// --- settings (environment variables, for quick experiments) ----------------------------------
/** Experiments per batch; a round submits two batches at once. */
const EXPERIMENTS = numEnv('BENCH_EXPERIMENTS', 40)
const BATCHES = 2
const TOTAL = EXPERIMENTS * BATCHES
const CONCURRENCY = numEnv('BENCH_CONCURRENCY', 10)
const ROUNDS = numEnv('BENCH_ROUNDS', 3) // each round: plain, then service
const SLEEP_S = numEnv('BENCH_SLEEP_S', 2) // the realistic workload's "training"
const LIGHT_SLEEP_S = numEnv('BENCH_LIGHT_SLEEP_S', 0.5)
const RETRY_MS = numEnv('BENCH_DISPATCH_RETRY_MS', 50)
const WORKLOADS: WorkloadName[] = (() => {
  const w = process.env.BENCH_WORKLOAD || 'both'
  if (w === 'both') return ['realistic', 'light']
  if (w === 'realistic' || w === 'light') return [w]
  throw new Error(`BENCH_WORKLOAD must be realistic, light or both, got ${w}`)
})()
const PHASES = process.env.BENCH_PHASES !== '0' // an extra, unscored service round at LOG_LEVEL=info per workload
/** `none` runs both sides' containers without a network (the workloads need none); default: the engine's default (bridge). */
const NETWORK = process.env.BENCH_NETWORK || undefined
const GOAL_RATIO = 1.1
const GOAL_RSS_MB = 150

const PROJECT = 'bench'
/** 1/concurrency, rounded down to FGMachine's units (a millionth) so that exactly CONCURRENCY fit. */
const CAPACITY = Math.floor(1_000_000 / CONCURRENCY) / 1_000_000
const roundTimeoutMs = (w: Workload) => 120_000 + Math.ceil(TOTAL / CONCURRENCY) * (w.sleepS + 10) * 1000

// --- one round of each kind -------------------------------------------------------------------
interface RoundResult {
  kind: 'service' | 'plain'
  wallMs: number
  /** Per experiment: POST sent (or spawn) to PUT /finished at FGLab (or exit), ms. */
  latencies: number[]
  lost: string[]
  /** Service: the accepted submissions, by id. */
  subs: Map<string, Submission>
  stats: DispatchStats
  /** Service: its CPU time over the round, ms, and how long that was (from the first capacity query to its last folder removed), ms. */
  cpuMs: number
  cpuWindowMs: number
  /** Service: FGLab's calls of this round, by experiment id. */
  calls: Map<string, RecordedCall[]>
  /** Service: the service's log lines of this round from here on. */
  logsFrom: number
}

const newOptions = () => Array.from({ length: TOTAL }, (_, n) => optionsFor(n, objectId()))

function callsById(fglab: FakeFglab, from: number): Map<string, RecordedCall[]> {
  const out = new Map<string, RecordedCall[]>()
  for (const c of fglab.calls.slice(from)) {
    const m = /^\/api\/v1\/experiments\/([0-9a-f]{24})/.exec(c.path)
    if (!m) continue
    let list = out.get(m[1]!)
    if (!list) out.set(m[1]!, (list = []))
    list.push(c)
  }
  return out
}

async function serviceRound(fglab: FakeFglab, svc: Service, w: Workload): Promise<RoundResult> {
  const opts = newOptions()
  const batches = Array.from({ length: BATCHES }, (_, b) => opts.slice(b * EXPERIMENTS, (b + 1) * EXPERIMENTS))
  const stats = newStats()
  const subs = new Map<string, Submission>()
  const callsFrom = fglab.calls.length
  const logsFrom = svc.logs.length
  const cpu0 = procCpuMs(svc.pid)
  const c0 = performance.now()
  const t0 = Date.now()
  const deadline = t0 + roundTimeoutMs(w)
  let failed = false
  await Promise.all(
    batches.map((b) =>
      dispatchBatch(b, { url: svc.url, project: PROJECT, retryMs: RETRY_MS, stats, deadline, aborted: () => failed }, (s) => subs.set(s.options._id, s)).catch(
        (err: unknown) => {
          failed = true
          throw err
        },
      ),
    ),
  )
  const ids = opts.map((o) => o._id)
  await fglab.waitFinished(ids, Math.max(1000, deadline - Date.now()))
  // The service removes each results folder after its last report: its CPU is counted until then.
  const settle = Date.now() + 5000
  while (readdirSync(svc.resultsDir).length && Date.now() < settle) await sleep(20)
  const cpuMs = procCpuMs(svc.pid) - cpu0
  const cpuWindowMs = performance.now() - c0
  const calls = callsById(fglab, callsFrom)
  const finishedAt = (id: string) => calls.get(id)?.find((c) => c.path.endsWith('/finished'))?.at ?? NaN
  const wallMs = Math.max(...ids.map(finishedAt)) - t0
  const latencies = opts.map((o) => finishedAt(o._id) - subs.get(o._id)!.postSentAt)
  const lost: string[] = []
  for (const o of opts) {
    const e = fglab.experiments.get(o._id)
    const problems: string[] = []
    if (!e) problems.push('FGLab never heard of it')
    else {
      if (e.started !== 1) problems.push(`started ${e.started}×`)
      if (e.finished !== 1) problems.push(`finished ${e.finished}×`)
      if (e.fields._status !== 'success') problems.push(`_status ${JSON.stringify(e.fields._status)}`)
      problems.push(...w.checkService(e, o))
    }
    if (problems.length) lost.push(`${w.name} service #${o.n} ${o._id}: ${problems.join(', ')}`)
  }
  return { kind: 'service', wallMs, latencies, lost, subs, stats, cpuMs, cpuWindowMs, calls, logsFrom }
}

async function plainRound(w: Workload, image: string, round: number): Promise<RoundResult> {
  const resultsDir = path.join(tmp, `plain-${w.name}-${round}`)
  mkdirSync(resultsDir, { recursive: true })
  const opts = newOptions()
  const latencies: number[] = []
  const lost: string[] = []
  const t0 = performance.now()
  await slidingWindow(TOTAL, CONCURRENCY, async (n) => {
    const o: Options = opts[n]!
    const dir = path.join(resultsDir, o._id)
    const start = performance.now()
    mkdirSync(dir) // as the service makes it before the start
    const { code, stderr } = await dockerRun([
      'run', '--rm', '--label', `fgm-bench=${runId}`, ...(NETWORK ? ['--network', NETWORK] : []),
      '-v', `${dir}:${dir}`, '-e', `FGLAB_RESULTS_DIR=${dir}`, ...w.plainArgs(image, o),
    ])
    latencies.push(performance.now() - start)
    const problems: string[] = []
    if (code !== 0) problems.push(`docker run exited ${code}: ${stderr.trim()}`)
    problems.push(...w.checkPlain(dir, o))
    if (problems.length) lost.push(`${w.name} plain #${n} ${o._id}: ${problems.join(', ')}`)
  })
  const wallMs = performance.now() - t0
  rmSync(resultsDir, { recursive: true, force: true })
  return { kind: 'plain', wallMs, latencies, lost, subs: new Map(), stats: newStats(), cpuMs: 0, cpuWindowMs: 0, calls: new Map(), logsFrom: 0 }
}

// --- the phase breakdown (service at LOG_LEVEL=info; not part of the ratio) ------------------
type PhaseRows = Array<[string, number[]]>

/** FGMachine's own updates at the end: the run's summary (its `FGMachine` field) and `_status`. */
const isReportOfEnd = (body: unknown) => typeof body === 'object' && body !== null && ('FGMachine' in body || '_status' in body)

function phaseBreakdown(svc: Service, r: RoundResult, plainLatencies: number[]): PhaseRows {
  const logAt = new Map<string, Map<string, number>>()
  for (const l of svc.logs.slice(r.logsFrom)) {
    if (typeof l.experimentId !== 'string' || typeof l.msg !== 'string' || typeof l.time !== 'number') continue
    let m = logAt.get(l.experimentId)
    if (!m) logAt.set(l.experimentId, (m = new Map()))
    if (!m.has(l.msg)) m.set(l.msg, l.time)
  }
  const cols: Record<string, number[]> = {}
  const row = (k: string) => (cols[k] ??= [])
  const add = (k: string, a: number | undefined, b: number | undefined) => {
    if (a === undefined || b === undefined || Number.isNaN(a) || Number.isNaN(b)) return
    row(k).push(b - a)
  }
  row('GET capacity → answered (dispatcher, every query)').push(...r.stats.capacityMs)
  for (const [id, s] of r.subs) {
    const at = (msg: string) => logAt.get(id)?.get(msg)
    const starting = at('starting experiment')
    const started = at('container started')
    const ended = at('experiment ended')
    const reported = at('experiment reported')
    const calls = r.calls.get(id) ?? []
    const finished = calls.find((c) => c.path.endsWith('/finished'))?.at
    const before = calls.filter((c) => c.at <= (finished ?? Infinity))
    const afterEnd = ended === undefined ? [] : before.filter((c) => c.at >= ended)
    // A results file reaches FGLab as an upload, or (a JSON file) as an update of its fields; not the summary or the status.
    const isResult = (c: RecordedCall) =>
      c.path.endsWith('/files') || (/[0-9a-f]{24}$/.test(c.path) && c.method === 'PUT' && !isReportOfEnd(c.body))
    const lastResult = before.filter(isResult).at(-1)?.at
    add('POST sent → answered (accepted)', s.postSentAt, s.postAnsweredAt)
    add('POST answered → "starting experiment" (reserve, mkdir, results watch ready)', s.postAnsweredAt, starting)
    add('"starting experiment" → "container started" (inspect image, create, attach, start)', starting, started)
    add('"container started" → "experiment ended" (the program incl. its sleep; wait, inspect, output end)', started, ended)
    add('"experiment ended" → first report at FGLab after it', ended, afterEnd[0]?.at)
    add('"experiment ended" → last results file at FGLab (upload, or a JSON file\'s fields)', ended, lastResult)
    add('"experiment ended" → PUT /finished at FGLab (remove container, final sweep, reports left)', ended, finished)
    row('  reports at FGLab after "experiment ended" (count)').push(afterEnd.length)
    row('  reports at FGLab in all (count)').push(before.length)
    add('PUT /finished → "experiment reported" (folder removed)', finished, reported)
    add('POST sent → PUT /finished (whole)', s.postSentAt, finished)
  }
  row('plain: docker run spawn → exit (scored rounds)').push(...plainLatencies)
  return Object.entries(cols)
}

// --- one workload: scored rounds, then the traced round ---------------------------------------
interface WorkloadResult {
  w: Workload
  plain: RoundResult[]
  service: RoundResult[]
  startRssKb: number
  peakKb: number
  sampledPeakKb: number
  /** Service CPU while idle (the plain rounds), ms per second. */
  idleCpuMsPerS: number
  leftInService: number
  phases?: PhaseRows
  tracedWallMs?: number
  lost: string[]
}

async function runWorkload(w: Workload, image: string, fglab: FakeFglab): Promise<WorkloadResult> {
  const projects = (resultsDir: string) => ({
    [PROJECT]: { image, ...w.project(resultsDir), capacity: CAPACITY, ...(NETWORK ? { network: NETWORK } : {}) },
  })
  const ready = { project: PROJECT, capacity: CONCURRENCY }
  process.stderr.write(`bench: ${w.name}: ${BATCHES} × ${EXPERIMENTS} experiments, ${CONCURRENCY} in flight (project capacity ${CAPACITY}), ${ROUNDS} round(s) of plain then service\n`)
  const svc = await startService(fglab, { name: `service-${w.name}`, logLevel: 'warn', projects, ready })
  const startRssKb = procStatusKb(svc.pid, 'VmRSS')
  const plain: RoundResult[] = []
  const service: RoundResult[] = []
  const lost: string[] = []
  let idleCpuMs = 0
  let idleMs = 0
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const cpu0 = procCpuMs(svc.pid)
      const t0 = performance.now()
      const p = await plainRound(w, image, round)
      idleCpuMs += procCpuMs(svc.pid) - cpu0
      idleMs += performance.now() - t0
      const s = await serviceRound(fglab, svc, w)
      plain.push(p)
      service.push(s)
      lost.push(...p.lost, ...s.lost)
      for (const r of [p, s]) process.stderr.write(`bench: ${w.name} round ${round + 1} ${r.kind.padEnd(7)} ${fmtS(r.wallMs)}${r.lost.length ? `  LOST ${r.lost.length}` : ''}\n`)
    }
  } catch (err) {
    process.stderr.write(`bench: the service's output:\n${svc.tail()}\n`)
    throw err
  }
  const peakKb = svc.peakRssKb()
  const sampledPeakKb = Math.max(0, ...svc.rssSamples)
  await svc.stop()
  const leftInService = readdirSync(svc.resultsDir).length

  let phases: PhaseRows | undefined
  let tracedWallMs: number | undefined
  if (PHASES) {
    const traced = await startService(fglab, { name: `traced-${w.name}`, logLevel: 'info', projects, ready })
    try {
      const r = await serviceRound(fglab, traced, w)
      lost.push(...r.lost.map((l) => `(traced round) ${l}`))
      await sleep(200) // the last "experiment reported" lines
      phases = phaseBreakdown(traced, r, plain.flatMap((p) => p.latencies))
      tracedWallMs = r.wallMs
      process.stderr.write(`bench: ${w.name} traced service round (LOG_LEVEL=info, not scored) ${fmtS(r.wallMs)}\n`)
    } catch (err) {
      process.stderr.write(`bench: the traced service's output:\n${traced.tail()}\n`)
      throw err
    } finally {
      await traced.stop()
    }
  }
  return { w, plain, service, startRssKb, peakKb, sampledPeakKb, idleCpuMsPerS: idleMs ? (idleCpuMs / idleMs) * 1000 : 0, leftInService, phases, tracedWallMs, lost }
}

function report(r: WorkloadResult): string[] {
  const { w, plain, service } = r
  const out: string[] = []
  const walls = (rs: RoundResult[]) => rs.map((x) => x.wallMs)
  const ratio = median(walls(service)) / median(walls(plain))
  const peakMb = r.peakKb / 1024
  const lat = (rs: RoundResult[]) => rs.flatMap((x) => x.latencies)
  const stats = newStats()
  for (const s of service) addStats(stats, s.stats)
  const cpuPerExp = service.map((s) => s.cpuMs / TOTAL)
  const netCpuPerExp = service.map((s) => (s.cpuMs - (r.idleCpuMsPerS * s.cpuWindowMs) / 1000) / TOTAL)
  const overhead = median(lat(service)) - median(lat(plain))
  out.push(`### ${w.name}: ${BATCHES} × ${EXPERIMENTS} experiments, ${CONCURRENCY} in flight`)
  out.push('')
  out.push(`  workload        ${w.describe}`)
  out.push(`  service         project capacity ${CAPACITY}, FGLab-like dispatcher: ${BATCHES} batches at once, each experiment GET capacity then POST, ${RETRY_MS} ms wait after a 501`)
  out.push(`  plain           docker run --rm, a sliding window of ${CONCURRENCY}`)
  out.push('')
  out.push('| round | plain docker run | FGMachine | ratio |')
  out.push('|---|---|---|---|')
  plain.forEach((p, i) => out.push(`| ${i + 1} | ${fmtS(p.wallMs)} | ${fmtS(service[i]!.wallMs)} | ${(service[i]!.wallMs / p.wallMs).toFixed(2)} |`))
  out.push(`| median | ${fmtS(median(walls(plain)))} | ${fmtS(median(walls(service)))} | **${ratio.toFixed(2)}** |`)
  out.push('')
  out.push(`ratio ${ratio.toFixed(3)} (goal ≤ ${GOAL_RATIO.toFixed(2)}: ${ratio <= GOAL_RATIO ? 'met' : 'NOT met'}); ` +
    `peak RSS ${peakMb.toFixed(1)} MB (goal < ${GOAL_RSS_MB} MB: ${peakMb < GOAL_RSS_MB ? 'met' : 'NOT met'})`)
  out.push(`service RSS: ${(r.startRssKb / 1024).toFixed(1)} MB after start, peak ${peakMb.toFixed(1)} MB (VmHWM; sampled max VmRSS ${(r.sampledPeakKb / 1024).toFixed(1)} MB)`)
  out.push(`FGMachine CPU: ${median(cpuPerExp).toFixed(1)} ms per experiment (user+system over a scored round / ${TOTAL}; rounds ${cpuPerExp.map((c) => c.toFixed(1)).join(', ')}); ` +
    `idle ${r.idleCpuMsPerS.toFixed(1)} ms/s while the plain rounds ran, so ${median(netCpuPerExp).toFixed(1)} ms per experiment above idle`)
  out.push(`latency per experiment (all rounds): plain spawn→exit median ${fmtS(median(lat(plain)))}, p90 ${fmtS(pct(lat(plain), 90))}; ` +
    `service POST→/finished median ${fmtS(median(lat(service)))}, p90 ${fmtS(pct(lat(service), 90))}; overhead ${overhead >= 0 ? '+' : ''}${overhead.toFixed(0)} ms (median − median)`)
  out.push(`dispatcher (scored rounds): ${stats.queries} capacity queries, ${stats.refused} answered 501; ${stats.posts} POSTs, ${stats.postRefused} answered 501; ` +
    `capacity answered in median ${median(stats.capacityMs).toFixed(1)} ms, p90 ${pct(stats.capacityMs, 90).toFixed(1)} ms`)
  if (r.leftInService) out.push(`note: ${r.leftInService} results folder(s) left behind by the service`)
  if (r.phases) {
    out.push('')
    out.push(`where a service experiment's time goes (one extra round at LOG_LEVEL=info, ${fmtS(r.tracedWallMs ?? NaN)}, not scored; ms):`)
    out.push('')
    out.push('| phase | n | median | p90 | mean |')
    out.push('|---|---|---|---|---|')
    for (const [k, xs] of r.phases) {
      const f = (x: number) => (Math.abs(x) < 10 && !k.includes('count') ? x.toFixed(1) : x.toFixed(0))
      out.push(`| ${k} | ${xs.length} | ${xs.length ? f(median(xs)) : '–'} | ${xs.length ? f(pct(xs, 90)) : '–'} | ${xs.length ? f(mean(xs)) : '–'} |`)
    }
  }
  out.push('')
  return out
}

// --- main ------------------------------------------------------------------------------------
async function main(): Promise<number> {
  if (EXPERIMENTS < 1 || CONCURRENCY < 1 || ROUNDS < 1) throw new Error('BENCH_EXPERIMENTS, BENCH_CONCURRENCY and BENCH_ROUNDS must be at least 1')
  if (!Number.isInteger(CONCURRENCY) || CONCURRENCY > 1000) throw new Error('BENCH_CONCURRENCY must be a whole number up to 1000')
  buildIfNeeded()
  const image = ensureBusyboxImage()
  const codeDir = path.join(tmp, 'code')
  mkdirSync(codeDir)
  const workloads = WORKLOADS.map((name) => (name === 'realistic' ? realistic(SLEEP_S, codeDir) : light(LIGHT_SLEEP_S)))
  const fglab = new FakeFglab()
  await fglab.start()
  const env = machineDescription()

  // Warm-up, not measured: the image and the engine's caches.
  const warm = await dockerRun(['run', '--rm', '--label', `fgm-bench=${runId}`, ...(NETWORK ? ['--network', NETWORK] : []), image, 'true'])
  if (warm.code !== 0) {
    const hint = /network|bridge|endpoint/i.test(warm.stderr) && !NETWORK ? '\n(the engine cannot set up its default network: BENCH_NETWORK=none runs both sides without one)' : ''
    throw new Error(`docker run ${image} true failed: ${warm.stderr.trim()}${hint}`)
  }

  const results: WorkloadResult[] = []
  for (const w of workloads) results.push(await runWorkload(w, image, fglab))
  await fglab.close()

  // --- report ---
  const out: string[] = []
  out.push('')
  out.push(`FGMachine benchmark — ${new Date().toISOString()}`)
  for (const [k, v] of Object.entries(env)) out.push(`  ${k.padEnd(15)} ${v}`)
  out.push(`  network         ${NETWORK ?? 'engine default (bridge)'}`)
  if (SERVICE_NODE_ARGS.length) out.push(`  service flags   node ${SERVICE_NODE_ARGS.join(' ')}`)
  out.push(`  rounds          ${ROUNDS} × (plain, then service) per workload, median of the rounds`)
  out.push('')
  for (const r of results) out.push(...report(r))
  const lost = results.flatMap((r) => r.lost)
  if (lost.length) {
    out.push(`RESULTS LOST (${lost.length}):`)
    for (const l of lost) out.push(`  ${l}`)
  } else {
    const n = results.length * (TOTAL * ROUNDS * 2 + (PHASES ? TOTAL : 0))
    out.push(`results: all ${n} experiments' results arrived (service: at FGLab; plain: on disk)`)
  }
  process.stdout.write(out.join('\n') + '\n')
  return lost.length ? 1 : 0
}

runBench('bench', main)

/**
 * `npm run bench`: 40 short experiments through the real FGMachine (a child
 * `node dist/server.js` against an in-process fake FGLab) against the same 40
 * workloads as plain `docker run`s, 10 in flight at a time for both.
 * Prints wall times, the ratio service/plain and the service's peak RSS.
 * Exit 0 (a measurement, not a test), non-zero if any result was lost or a
 * round could not run. See bench/README.md.
 */
import { mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { FakeFglab } from '../test/helpers/fake-fglab.js'
import { objectId } from '../test/helpers/ids.js'
import { ensureBusyboxImage } from '../test/helpers/images.js'
import {
  buildIfNeeded,
  runBench,
  dockerRun,
  fmtS,
  machineDescription,
  mean,
  median,
  numEnv,
  pct,
  runId,
  SERVICE_NODE_ARGS,
  sleep,
  slidingWindow,
  tmp,
} from './lib.js'
import { procStatusKb, startService, type Service } from './service.js'

// --- settings (environment variables, for quick experiments) ----------------------------------
const EXPERIMENTS = numEnv('BENCH_EXPERIMENTS', 40)
const CONCURRENCY = numEnv('BENCH_CONCURRENCY', 10)
const ROUNDS = numEnv('BENCH_ROUNDS', 3) // each round: plain, then service
const SLEEP_S = numEnv('BENCH_SLEEP_S', 0.5)
const PHASES = process.env.BENCH_PHASES !== '0' // an extra, unscored service round at LOG_LEVEL=info
/** `none` runs both sides' containers without a network (the workload needs none); default: the engine's default (bridge). */
const NETWORK = process.env.BENCH_NETWORK || undefined
const EXPERIMENT_TIMEOUT_MS = 120_000
const GOAL_RATIO = 1.25
const GOAL_RSS_MB = 150

const PROJECT = 'bench'

/** The workload: sleep, then scores and a small file into the results folder. argv: exp n <n> _id <id>. */
const SCRIPT = `sleep ${SLEEP_S}; d="$FGLAB_RESULTS_DIR"; echo "{\\"_scores\\": {\\"n\\": $2}}" > "$d/scores.json"; echo "log $2" > "$d/run.log"`

/** The bench's one project: capacity 0.1, the workload above, in the local busybox image. */
const projects = (resultsDir: string) => ({
  [PROJECT]: { image: ensureBusyboxImage(), command: 'sh', args: ['-c', SCRIPT, 'exp'], options: 'plain', capacity: 0.1, results: resultsDir, ...(NETWORK ? { network: NETWORK } : {}) },
})

// --- one round of each kind -------------------------------------------------------------------
interface RoundResult {
  kind: 'service' | 'plain'
  wallMs: number
  /** Per experiment: submit (or spawn) to finished (or exit), ms. */
  latencies: number[]
  lost: string[]
  ids: string[]
  submittedAt: Map<string, number>
}

async function serviceRound(fglab: FakeFglab, svc: Service): Promise<RoundResult> {
  const ids = Array.from({ length: EXPERIMENTS }, objectId)
  const submittedAt = new Map<string, number>()
  const latencies: number[] = []
  const t0 = performance.now()
  await slidingWindow(EXPERIMENTS, CONCURRENCY, async (i) => {
    const id = ids[i]!
    const start = performance.now()
    submittedAt.set(id, Date.now())
    const res = await fetch(`${svc.url}/projects/${PROJECT}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ n: i, _id: id }),
    })
    const text = await res.text()
    if (res.status !== 200) throw new Error(`submit ${i} (${id}): ${res.status} ${text}`)
    await fglab.waitFor(() => (fglab.experiments.get(id)?.finished ?? 0) > 0, EXPERIMENT_TIMEOUT_MS, `finished of experiment ${i} (${id})`)
    latencies.push(performance.now() - start)
  })
  const wallMs = performance.now() - t0
  const lost: string[] = []
  ids.forEach((id, n) => {
    const e = fglab.experiments.get(id)
    const problems: string[] = []
    if (!e) problems.push('FGLab never heard of it')
    else {
      if (e.started !== 1) problems.push(`started ${e.started}×`)
      if (e.finished !== 1) problems.push(`finished ${e.finished}×`)
      if (e.fields._status !== 'success') problems.push(`_status ${JSON.stringify(e.fields._status)}`)
      if (JSON.stringify(e.fields._scores) !== JSON.stringify({ n })) problems.push(`_scores ${JSON.stringify(e.fields._scores)}`)
      if (e.files.get('run.log')?.data?.toString() !== `log ${n}\n`) problems.push(`run.log ${JSON.stringify(e.files.get('run.log')?.data?.toString())}`)
    }
    if (problems.length) lost.push(`service #${n} ${id}: ${problems.join(', ')}`)
  })
  return { kind: 'service', wallMs, latencies, lost, ids, submittedAt }
}

async function plainRound(image: string, round: number): Promise<RoundResult> {
  const resultsDir = path.join(tmp, `plain-${round}`)
  mkdirSync(resultsDir, { recursive: true })
  const ids = Array.from({ length: EXPERIMENTS }, objectId)
  const submittedAt = new Map<string, number>()
  const latencies: number[] = []
  const lost: string[] = []
  const t0 = performance.now()
  await slidingWindow(EXPERIMENTS, CONCURRENCY, async (n) => {
    const id = ids[n]!
    const dir = path.join(resultsDir, id)
    const start = performance.now()
    submittedAt.set(id, Date.now())
    mkdirSync(dir) // as the service makes it before the start
    const { code, stderr } = await dockerRun([
      'run', '--rm', '--label', `fgm-bench=${runId}`, ...(NETWORK ? ['--network', NETWORK] : []), '-v', `${dir}:${dir}`, '-e', `FGLAB_RESULTS_DIR=${dir}`,
      image, 'sh', '-c', SCRIPT, 'exp', 'n', String(n), '_id', id,
    ])
    latencies.push(performance.now() - start)
    const problems: string[] = []
    if (code !== 0) problems.push(`docker run exited ${code}: ${stderr.trim()}`)
    try {
      const scores = JSON.parse(readFileSync(path.join(dir, 'scores.json'), 'utf8')) as { _scores?: unknown }
      if (JSON.stringify(scores._scores) !== JSON.stringify({ n })) problems.push(`scores ${JSON.stringify(scores)}`)
      if (readFileSync(path.join(dir, 'run.log'), 'utf8') !== `log ${n}\n`) problems.push('run.log differs')
    } catch (err) {
      problems.push((err as Error).message)
    }
    if (problems.length) lost.push(`plain #${n} ${id}: ${problems.join(', ')}`)
  })
  const wallMs = performance.now() - t0
  rmSync(resultsDir, { recursive: true, force: true })
  return { kind: 'plain', wallMs, latencies, lost, ids, submittedAt }
}

// --- the phase breakdown (service at LOG_LEVEL=info; not part of the ratio) ------------------
interface Phases {
  rows: Array<[string, number[]]>
}

function phaseBreakdown(fglab: FakeFglab, svc: Service, r: RoundResult): Phases {
  const at = (id: string, msg: string): number | undefined => {
    const l = svc.logs.find((x) => x.experimentId === id && x.msg === msg)
    return typeof l?.time === 'number' ? l.time : undefined
  }
  const call = (id: string, pred: (p: string, body: unknown) => boolean): number | undefined =>
    fglab.calls.find((c) => c.path.startsWith(`/api/v1/experiments/${id}`) && pred(c.path, c.body))?.at
  const cols: Record<string, number[]> = {}
  const add = (k: string, a: number | undefined, b: number | undefined) => {
    if (a === undefined || b === undefined) return
    ;(cols[k] ??= []).push(b - a)
  }
  for (const id of r.ids) {
    const submitted = r.submittedAt.get(id)
    const starting = at(id, 'starting experiment')
    const started = at(id, 'container started')
    const ended = at(id, 'experiment ended')
    const reported = at(id, 'experiment reported')
    const finishedCall = call(id, (p) => p.endsWith('/finished'))
    const reports = fglab.calls.filter((c) => c.path.startsWith(`/api/v1/experiments/${id}`) && c.at <= (finishedCall ?? 0)).map((c) => c.at)
    const afterEnd = ended === undefined ? [] : reports.filter((t) => t >= ended)
    add('submit → "starting experiment" (reserve, mkdir, results watch ready)', submitted, starting)
    add('"starting experiment" → "container started" (inspect image, create, attach, start)', starting, started)
    add('"container started" → "experiment ended" (program incl. sleep, wait, inspect, output end)', started, ended)
    add('"experiment ended" → PUT /finished at FGLab (remove container, final sweep, reports left)', ended, finishedCall)
    add('  of which: "experiment ended" → first report after it', ended, afterEnd[0])
    ;(cols['  reports sent after "experiment ended" (count)'] ??= []).push(afterEnd.length)
    add('PUT /finished → "experiment reported" (folder removed)', finishedCall, reported)
    add('submit → PUT /finished (whole)', submitted, finishedCall)
  }
  return { rows: Object.entries(cols) }
}

// --- main ------------------------------------------------------------------------------------
async function main(): Promise<number> {
  if (EXPERIMENTS < 1 || CONCURRENCY < 1 || ROUNDS < 1) throw new Error('BENCH_EXPERIMENTS, BENCH_CONCURRENCY and BENCH_ROUNDS must be at least 1')
  buildIfNeeded()
  const image = ensureBusyboxImage()
  const fglab = new FakeFglab()
  await fglab.start()
  const svc = await startService(fglab, { name: 'service', logLevel: 'warn', projects, ready: { project: PROJECT, capacity: 10 } })
  const startRssKb = procStatusKb(svc.pid, 'VmRSS')
  const env = machineDescription()
  process.stderr.write(
    `bench: ${EXPERIMENTS} experiments (sleep ${SLEEP_S} s, scores.json + run.log), ${CONCURRENCY} in flight (sliding window), ${ROUNDS} round(s) of plain then service\n`,
  )

  // Warm-up, not measured: the image and the engine's caches, both paths.
  const warm = await dockerRun(['run', '--rm', '--label', `fgm-bench=${runId}`, ...(NETWORK ? ['--network', NETWORK] : []), image, 'true'])
  if (warm.code !== 0) {
    const hint = /network|bridge|endpoint/i.test(warm.stderr) && !NETWORK ? '\n(the engine cannot set up its default network: BENCH_NETWORK=none runs both sides without one)' : ''
    throw new Error(`docker run ${image} true failed: ${warm.stderr.trim()}${hint}`)
  }

  const results: RoundResult[] = []
  const lost: string[] = []
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const kind of ['plain', 'service'] as const) {
        const r = kind === 'plain' ? await plainRound(image, round) : await serviceRound(fglab, svc)
        results.push(r)
        lost.push(...r.lost)
        process.stderr.write(`bench: round ${round + 1} ${kind.padEnd(7)} ${fmtS(r.wallMs)}${r.lost.length ? `  LOST ${r.lost.length}` : ''}\n`)
      }
    }
  } catch (err) {
    process.stderr.write(`bench: the service's output:\n${svc.tail()}\n`)
    throw err
  }
  const peakKb = svc.peakRssKb()
  const sampledPeakKb = Math.max(0, ...svc.rssSamples)
  await svc.stop()
  const leftInService = readdirSync(path.join(tmp, 'service/results'))

  let phases: Phases | undefined
  if (PHASES) {
    const traced = await startService(fglab, { name: 'traced', logLevel: 'info', projects, ready: { project: PROJECT, capacity: 10 } })
    try {
      const r = await serviceRound(fglab, traced)
      lost.push(...r.lost.map((l) => `(traced round) ${l}`))
      await sleep(200) // the last "experiment reported" lines
      phases = phaseBreakdown(fglab, traced, r)
      process.stderr.write(`bench: traced service round (LOG_LEVEL=info, not scored) ${fmtS(r.wallMs)}\n`)
    } finally {
      await traced.stop()
    }
  }
  await fglab.close()

  // --- report ---
  const plain = results.filter((r) => r.kind === 'plain')
  const service = results.filter((r) => r.kind === 'service')
  const ratios = plain.map((p, i) => service[i]!.wallMs / p.wallMs)
  const ratio = median(service.map((r) => r.wallMs)) / median(plain.map((r) => r.wallMs))
  const peakMb = peakKb / 1024
  const out: string[] = []
  out.push('')
  out.push(`FGMachine benchmark — ${new Date().toISOString()}`)
  for (const [k, v] of Object.entries(env)) out.push(`  ${k.padEnd(15)} ${v}`)
  out.push(`  network         ${NETWORK ?? 'engine default (bridge)'}`)
  if (SERVICE_NODE_ARGS.length) out.push(`  service flags   node ${SERVICE_NODE_ARGS.join(' ')}`)
  out.push(`  workload        ${EXPERIMENTS} × busybox sh -c 'sleep ${SLEEP_S}; write scores.json and run.log', ${CONCURRENCY} in flight (sliding window), capacity 0.1`)
  out.push('')
  out.push('| round | plain docker run | FGMachine | ratio |')
  out.push('|---|---|---|---|')
  plain.forEach((p, i) => out.push(`| ${i + 1} | ${fmtS(p.wallMs)} | ${fmtS(service[i]!.wallMs)} | ${ratios[i]!.toFixed(2)} |`))
  out.push(`| median | ${fmtS(median(plain.map((r) => r.wallMs)))} | ${fmtS(median(service.map((r) => r.wallMs)))} | **${ratio.toFixed(2)}** |`)
  out.push('')
  const lat = (rs: RoundResult[]) => rs.flatMap((r) => r.latencies)
  out.push(`per experiment (all rounds): plain spawn→exit median ${fmtS(median(lat(plain)))}, p90 ${fmtS(pct(lat(plain), 90))}; ` +
    `service submit→finished median ${fmtS(median(lat(service)))}, p90 ${fmtS(pct(lat(service), 90))}`)
  out.push(`service RSS: ${(startRssKb / 1024).toFixed(1)} MB after start, peak ${peakMb.toFixed(1)} MB (VmHWM; sampled max VmRSS ${(sampledPeakKb / 1024).toFixed(1)} MB)`)
  out.push(`goal: ratio ≤ ${GOAL_RATIO} → ${ratio <= GOAL_RATIO ? 'met' : 'NOT met'}; peak RSS < ${GOAL_RSS_MB} MB → ${peakMb < GOAL_RSS_MB ? 'met' : 'NOT met'}`)
  if (leftInService.length) out.push(`note: ${leftInService.length} results folder(s) left behind by the service`)
  if (phases) {
    out.push('')
    out.push(`where a service experiment's time goes (one extra round at LOG_LEVEL=info, ms over ${EXPERIMENTS} experiments):`)
    out.push('| phase | median | p90 | mean |')
    out.push('|---|---|---|---|')
    for (const [k, xs] of phases.rows) out.push(`| ${k} | ${median(xs).toFixed(0)} | ${pct(xs, 90).toFixed(0)} | ${mean(xs).toFixed(0)} |`)
  }
  out.push('')
  if (lost.length) {
    out.push(`RESULTS LOST (${lost.length}):`)
    for (const l of lost) out.push(`  ${l}`)
  } else {
    out.push(`results: all ${EXPERIMENTS * ROUNDS * 2 + (PHASES ? EXPERIMENTS : 0)} experiments' scores and files arrived`)
  }
  process.stdout.write(out.join('\n') + '\n')
  return lost.length ? 1 : 0
}

runBench('bench', main)

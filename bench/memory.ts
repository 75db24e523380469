/**
 * `npm run bench:memory`: what FGMachine's memory and responsiveness do while
 * experiments produce a lot: a 2 GiB results file, 200 MB of stdout (with and
 * without a viewer on the live log), 20,000 small results files. Each case
 * runs on a fresh service (the build, `npm start`'s flags, LOG_LEVEL=info)
 * against an in-process fake FGLab that answers as the real one does, and
 * reports the service's peak RSS (VmHWM), its RSS before, the time, and for
 * the files the delivery rate and the capacity answer's latency.
 * Exit 0 (a measurement), 1 if a result was lost, 2 if a case could not run.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { CHART_FILE } from '../src/sysstats/charts.js'
import { FakeFglab } from '../test/helpers/fake-fglab.js'
import { objectId } from '../test/helpers/ids.js'
import { ensureBusyboxImage } from '../test/helpers/images.js'
import { buildIfNeeded, machineDescription, numEnv, pct, runBench, SERVICE_NODE_ARGS } from './lib.js'
import { procStatusKb, startService, type Service } from './service.js'

const UPLOAD_MB = numEnv('BENCH_UPLOAD_MB', 2048)
const FLOOD_MB = numEnv('BENCH_FLOOD_MB', 200)
const FILES = numEnv('BENCH_FILES', 20_000)

const TIMEOUT_MS = 1_200_000

interface CaseResult {
  name: string
  seconds: number
  rssBeforeMb: number
  peakMb: number
  detail: string
  lost?: string
}

const mb = (kb: number) => kb / 1024

/** One case: a service with one project running `script`, one experiment, until FGLab has it all. */
async function runCase(name: string, script: string, project: Record<string, unknown>, during?: (svc: Service, id: string) => () => string): Promise<{ r: CaseResult; fglab: FakeFglab; svc: Service; id: string }> {
  const fglab = new FakeFglab()
  fglab.keepBytes = 1024 * 1024 // the fake hashes big uploads instead of holding them
  await fglab.start()
  const svc = await startService(fglab, {
    name,
    logLevel: 'info',
    projects: (results) => ({ p: { image: ensureBusyboxImage(), command: 'sh', args: ['-c', script], capacity: 0.5, results, ...project } }),
    ready: { project: 'p' },
  })
  const rssBeforeMb = mb(procStatusKb(svc.pid, 'VmRSS'))
  const id = objectId()
  const t0 = performance.now()
  const res = await fetch(`${svc.url}/projects/p`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ _id: id }) })
  if (res.status !== 200) throw new Error(`${name}: submit answered ${res.status} ${await res.text()}`)
  const finish = during?.(svc, id)
  await fglab.waitFinished([id], TIMEOUT_MS)
  const seconds = (performance.now() - t0) / 1000
  const peakMb = mb(svc.peakRssKb())
  const detail = finish?.() ?? ''
  await svc.stop()
  await fglab.close()
  return { r: { name, seconds, rssBeforeMb, peakMb, detail }, fglab, svc, id }
}

async function upload(): Promise<CaseResult> {
  const bytes = UPLOAD_MB * 2 ** 20
  // A sparse checkpoint: its head, a hole, 1 MiB of random at its end.
  const script = `d="$FGLAB_RESULTS_DIR"; printf 'ckpt\\n' > "$d/model.ckpt"; dd if=/dev/urandom of="$d/model.ckpt" bs=1048576 count=1 seek=${UPLOAD_MB - 1} conv=notrunc 2>/dev/null`
  const { r, fglab, svc, id } = await runCase('upload', script, { keep_results: true })
  const stored = fglab.experiment(id).files.get('model.ckpt')
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path.join(svc.resultsDir, id, 'model.ckpt'))) hash.update(chunk as Buffer)
  if (stored?.size !== bytes || stored.sha256 !== hash.digest('hex')) r.lost = `model.ckpt: FGLab got ${stored?.size} bytes, not ${bytes} as sent`
  r.name = `${UPLOAD_MB} MiB results file`
  r.detail = `${(UPLOAD_MB / r.seconds).toFixed(0)} MiB/s, checksum ${r.lost ? 'WRONG' : 'equal'}`
  return r
}

async function flood(viewer: boolean): Promise<CaseResult> {
  const script = `sleep 1; yes 'step 123456: loss 0.123456 acc 0.987654 lr 0.001 (a line of a training log)' | head -c ${FLOOD_MB * 2 ** 20}`
  const { r, fglab, id } = await runCase(viewer ? 'flood-viewed' : 'flood', script, {}, (svc, expId) => {
    if (!viewer) return () => ''
    let got = 0
    const ws = new WebSocket(svc.url.replace('http', 'ws') + '/')
    ws.on('open', () => ws.send(`experiments:${expId}`))
    ws.on('message', (d: Buffer) => (got += d.length))
    return () => {
      ws.close()
      return `the viewer got ${(got / 2 ** 20).toFixed(0)} MiB live`
    }
  })
  if (fglab.experiment(id).fields._status !== 'success') r.lost = 'the experiment did not end success'
  r.name = `${FLOOD_MB} MB of stdout${viewer ? ', a viewer on the live log' : ', nobody watching'}`
  return r
}

async function files(): Promise<CaseResult> {
  const script = `d="$FGLAB_RESULTS_DIR"; i=0; while [ $i -lt ${FILES} ]; do echo "sample $i" > "$d/s$i.txt"; i=$((i+1)); done`
  const latencies: number[] = []
  const { r, fglab, id } = await runCase('files', script, {}, (svc) => {
    let polling = true
    void (async () => {
      while (polling) {
        const t0 = performance.now()
        await fetch(`${svc.url}/projects/p/capacity`).then((x) => x.arrayBuffer())
        latencies.push(performance.now() - t0)
        await new Promise((res) => setTimeout(res, 20))
      }
    })()
    return () => {
      polling = false
      return ''
    }
  })
  const uploads = fglab.calls.filter((c) => c.files).map((c) => c.at)
  const rate = uploads.length / Math.max(0.001, (Math.max(...uploads) - Math.min(...uploads)) / 1000)
  // The experiment's own files; its system chart (fgmachine-system.svg) comes with them.
  const got = [...fglab.experiment(id).files.keys()].filter((f) => f !== CHART_FILE).length
  if (got !== FILES) r.lost = `${FILES - got} of ${FILES} files missing`
  r.name = `${FILES} small results files`
  r.detail = `${rate.toFixed(0)} files/s delivered; capacity answer median ${pct(latencies, 50).toFixed(1)} ms, p99 ${pct(latencies, 99).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms (${latencies.length} answers)`
  return r
}

async function main(): Promise<number> {
  buildIfNeeded()
  const results: CaseResult[] = []
  const cases = { upload, flood: () => flood(false), 'flood-viewed': () => flood(true), files }
  const chosen = (process.env.BENCH_CASES ?? Object.keys(cases).join(',')).split(',')
  for (const [name, c] of Object.entries(cases)) {
    if (!chosen.includes(name)) continue
    const r = await c()
    results.push(r)
    process.stderr.write(`bench:memory: ${r.name}: ${r.seconds.toFixed(1)} s, peak ${r.peakMb.toFixed(0)} MB\n`)
  }
  const out = ['', `FGMachine memory benchmark — ${new Date().toISOString()}`]
  for (const [k, v] of Object.entries(machineDescription())) out.push(`  ${k.padEnd(15)} ${v}`)
  out.push(`  service         node ${SERVICE_NODE_ARGS.join(' ')} dist/server.js, LOG_LEVEL=info`, '')
  out.push('| case | time | RSS before | peak RSS (VmHWM) | |', '|---|---|---|---|---|')
  for (const r of results) out.push(`| ${r.name} | ${r.seconds.toFixed(1)} s | ${r.rssBeforeMb.toFixed(0)} MB | **${r.peakMb.toFixed(0)} MB** | ${r.detail} |`)
  const lost = results.filter((r) => r.lost)
  out.push('', lost.length ? `RESULTS LOST: ${lost.map((r) => `${r.name}: ${r.lost}`).join('; ')}` : 'results: everything arrived whole')
  process.stdout.write(out.join('\n') + '\n')
  return lost.length ? 1 : 0
}

runBench('bench:memory', main)

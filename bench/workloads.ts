/**
 * The bench's two workloads, as busybox `sh` programs that both sides run the
 * same way (the service through a project, plain through `docker run`), and
 * what each must have delivered: at FGLab for the service, on disk for plain.
 *
 * - realistic: run.json (the options), a copy of its own source (train.sh),
 *   notes.json twice (rewritten at the end), a few lines on stdout and one on
 *   stderr, "training" (a sleep, a progress line every ~0.5 s), then a
 *   1,000-point chart, scores and a small PNG.
 * - light: the bench's first workload: a sleep, scores.json and run.log.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { deflateSync, crc32 } from 'node:zlib'
import type { FakeExperiment } from '../test/helpers/fake-fglab.js'

export type WorkloadName = 'realistic' | 'light'

/** One experiment's options, as FGLab sends them (`_id` last). */
export type Options = { n: number; seed: number; lr: number; model: string; _id: string }

export const optionsFor = (n: number, id: string): Options => ({ n, seed: 1000 + n, lr: 0.001, model: 'cnn', _id: id })

export interface Workload {
  name: WorkloadName
  sleepS: number
  /** One line, for the report. */
  describe: string
  /** projects.json's entry (without capacity and network). */
  project(resultsDir: string): Record<string, unknown>
  /** `docker run` arguments after the results mount and env: extra mounts, then image and command with the options. */
  plainArgs(image: string, options: Options): string[]
  /** What is missing or wrong at FGLab for this service experiment. */
  checkService(e: FakeExperiment, o: Options): string[]
  /** What is missing or wrong in this plain experiment's results folder. */
  checkPlain(dir: string, o: Options): string[]
}

/** The options as plain-style argv (what FGMachine passes for `options: "plain"`). */
const argv = (o: Options) => Object.entries(o).flatMap(([k, v]) => [k, String(v)])

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
const show = (v: unknown) => {
  const s = JSON.stringify(v) ?? 'undefined'
  return s.length > 80 ? `${s.slice(0, 77)}...` : s
}

// --- a small PNG ------------------------------------------------------------------------------
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4)
  len.writeUInt32BE(data.length)
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data])
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(td))
  return Buffer.concat([len, td, crc])
}

/** A 128×80 greyscale PNG of a falling loss curve: a few hundred bytes. */
function lossCurvePng(): Buffer {
  const w = 128
  const h = 80
  const rows: Buffer[] = []
  for (let y = 0; y < h; y++) {
    const row = Buffer.alloc(1 + w, 255) // filter 0, white
    row[0] = 0
    for (let x = 0; x < w; x++) {
      const curve = Math.round((h - 4) * Math.exp(-x / 24)) + 2
      if (h - 1 - y === curve || x === 0 || y === h - 1) row[1 + x] = 0
    }
    rows.push(row)
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(w, 0)
  ihdr.writeUInt32BE(h, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 0 // greyscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.concat(rows), { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

export const CURVE_PNG = lossCurvePng()

// --- realistic --------------------------------------------------------------------------------
export const CHART_POINTS = 1000

/** The chart train.sh writes: C3-style, one series of 1,000 [step, loss] points. */
export const expectedCharts = () => [
  { columnNames: ['step', 'loss'], data: Array.from({ length: CHART_POINTS }, (_, i) => [i, (CHART_POINTS - i) / CHART_POINTS]) },
]

/** train.sh: the realistic workload's program. argv: its options, plain style (`n 3 seed 1003 … _id <id>`). */
export function trainScript(sleepS: number): string {
  const steps = sleepS > 0 ? Math.max(1, Math.round(sleepS / 0.5)) : 0
  const stepS = steps ? Number((sleepS / steps).toFixed(3)) : 0
  return `#!/bin/sh
# train.sh: a stand-in for a training run (FGMachine benchmark)
d="$FGLAB_RESULTS_DIR"
run='{'; sep=; n=
while [ $# -ge 2 ]; do
  case "$1:$2" in _id:*|*:|*:*[!0-9.]*) v="\\"$2\\"";; *) v=$2;; esac
  run="$run$sep\\"$1\\":$v"; sep=,
  [ "$1" = n ] && n=$2
  shift 2
done
printf '%s}\\n' "$run" > "$d/run.json"
cp "$0" "$d/train.sh"
echo '{"_notes":"started"}' > "$d/notes.json"
echo "train.sh: experiment n=$n"
echo "train.sh: options $run}"
echo "train.sh: results in $d"
echo "train.sh: warning: no GPU, training on the CPU (n=$n)" >&2
i=1
while [ $i -le ${steps} ]; do
  sleep ${stepS}
  echo "step $i/${steps}: loss 0.$((900 - i))"
  i=$((i + 1))
done
{
  printf '{"_charts":[{"columnNames":["step","loss"],"data":[[0,1.000]'
  i=1
  while [ $i -lt ${CHART_POINTS} ]; do
    printf ',[%d,0.%03d]' $i $((${CHART_POINTS} - i))
    i=$((i + 1))
  done
  printf ']}]}\\n'
} > "$d/chart.json"
echo "{\\"_scores\\":{\\"n\\":$n,\\"loss\\":0.001}}" > "$d/scores.json"
echo '${CURVE_PNG.toString('base64')}' | base64 -d > "$d/curve.png"
echo "{\\"_notes\\":\\"done n=$n\\"}" > "$d/notes.json"
echo "train.sh: done, loss 0.001"
`
}

export function realistic(sleepS: number, codeDir: string): Workload {
  const source = trainScript(sleepS)
  writeFileSync(path.join(codeDir, 'train.sh'), source)
  const mount = `${codeDir}:/code:ro`
  const runFields = (o: Options) => ({ n: o.n, seed: o.seed, lr: o.lr, model: o.model })
  const scores = (o: Options) => ({ n: o.n, loss: 0.001 })
  return {
    name: 'realistic',
    sleepS,
    describe: `busybox sh /code/train.sh: run.json, train.sh (copy of itself), notes.json, stdout/stderr lines, sleep ${sleepS} s with progress every ~0.5 s, chart.json (${CHART_POINTS} points), scores.json, curve.png (${CURVE_PNG.length} B), notes.json rewritten`,
    project: (results) => ({ command: 'sh', args: ['/code/train.sh'], options: 'plain', results, volumes: [mount] }),
    plainArgs: (image, o) => ['-v', mount, image, 'sh', '/code/train.sh', ...argv(o)],
    checkService(e, o) {
      const p: string[] = []
      const f = e.fields
      for (const [k, v] of Object.entries(runFields(o))) if (f[k] !== v) p.push(`run.json ${k} ${show(f[k])}`)
      if (!same(f._scores, scores(o))) p.push(`_scores ${show(f._scores)}`)
      if (f._notes !== `done n=${o.n}`) p.push(`_notes ${show(f._notes)}`)
      if (!same(f._charts, expectedCharts())) {
        const c = f._charts as Array<{ data?: unknown[] }> | undefined
        p.push(`_charts ${Array.isArray(c) ? `with ${c[0]?.data?.length ?? 0} points, or not as written` : show(c)}`)
      }
      if (e.files.get('train.sh')?.data?.toString() !== source) p.push(`train.sh ${e.files.has('train.sh') ? 'differs' : 'missing'}`)
      if (!e.files.get('curve.png')?.data?.equals(CURVE_PNG)) p.push(`curve.png ${e.files.has('curve.png') ? 'differs' : 'missing'}`)
      return p
    },
    checkPlain(dir, o) {
      const p: string[] = []
      const json = (name: string): Record<string, unknown> | undefined => {
        try {
          return JSON.parse(readFileSync(path.join(dir, name), 'utf8')) as Record<string, unknown>
        } catch (err) {
          p.push(`${name}: ${(err as Error).message}`)
          return undefined
        }
      }
      const bytes = (name: string): Buffer | undefined => {
        try {
          return readFileSync(path.join(dir, name))
        } catch (err) {
          p.push(`${name}: ${(err as Error).message}`)
          return undefined
        }
      }
      const run = json('run.json')
      if (run && !same(run, { ...runFields(o), _id: o._id })) p.push(`run.json ${show(run)}`)
      const s = json('scores.json')
      if (s && !same(s._scores, scores(o))) p.push(`scores.json ${show(s)}`)
      const notes = json('notes.json')
      if (notes && notes._notes !== `done n=${o.n}`) p.push(`notes.json ${show(notes)}`)
      const chart = json('chart.json')
      if (chart && !same(chart._charts, expectedCharts())) p.push('chart.json not as expected')
      const src = bytes('train.sh')
      if (src && src.toString() !== source) p.push('train.sh differs')
      const png = bytes('curve.png')
      if (png && !png.equals(CURVE_PNG)) p.push('curve.png differs')
      return p
    },
  }
}

// --- light ------------------------------------------------------------------------------------
export function light(sleepS: number): Workload {
  /** argv: exp n <n> seed … _id <id>: $2 is n. */
  const script = `sleep ${sleepS}; d="$FGLAB_RESULTS_DIR"; echo "{\\"_scores\\": {\\"n\\": $2}}" > "$d/scores.json"; echo "log $2" > "$d/run.log"`
  return {
    name: 'light',
    sleepS,
    describe: `busybox sh -c 'sleep ${sleepS}; write scores.json and run.log'`,
    project: (results) => ({ command: 'sh', args: ['-c', script, 'exp'], options: 'plain', results }),
    plainArgs: (image, o) => [image, 'sh', '-c', script, 'exp', ...argv(o)],
    checkService(e, o) {
      const p: string[] = []
      if (!same(e.fields._scores, { n: o.n })) p.push(`_scores ${show(e.fields._scores)}`)
      if (e.files.get('run.log')?.data?.toString() !== `log ${o.n}\n`) p.push(`run.log ${show(e.files.get('run.log')?.data?.toString())}`)
      return p
    },
    checkPlain(dir, o) {
      const p: string[] = []
      try {
        const scores = JSON.parse(readFileSync(path.join(dir, 'scores.json'), 'utf8')) as { _scores?: unknown }
        if (!same(scores._scores, { n: o.n })) p.push(`scores ${show(scores)}`)
        if (readFileSync(path.join(dir, 'run.log'), 'utf8') !== `log ${o.n}\n`) p.push('run.log differs')
      } catch (err) {
        p.push((err as Error).message)
      }
      return p
    },
  }
}

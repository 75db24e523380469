/**
 * The system chart FGLab shows inline (`fgmachine-system.svg`): stacked panels
 * of CPU, memory, GPU utilisation and GPU memory over the time since the
 * first sample. A standalone SVG document, deterministic, without external
 * resources. Pure: no I/O.
 */
import { formatBytes, formatMiB } from './fields.js'
import type { SeriesPoint, SystemSeries } from './series.js'

const WIDTH = 900
const LEFT = 76
const RIGHT = 24
const PLOT_W = WIDTH - LEFT - RIGHT
const PANEL_TITLE_H = 24
const PLOT_H = 130
const X_LABELS_H = 18
const PANEL_GAP = 14
const PANEL_H = PANEL_TITLE_H + PLOT_H + X_LABELS_H + PANEL_GAP
const CAPTION_H = 22
const MAX_TITLE = 120

const TEXT = '#333'
const MUTED = '#666'
const GRID = '#e6e6e6'
const AXIS = '#999'
const LIMIT = '#d62728'
const CPU_COLOUR = '#1f77b4'
const MEM_COLOUR = '#2ca02c'
/** One colour per GPU (by position), distinct for up to ten. */
export const GPU_COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf']

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const SECOND = 1000
const MINUTE = 60 * SECOND
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

/** Candidate x-axis steps (ms): consecutive ones at most 2.5× apart, so a span always gets 4–8 ticks. */
const TIME_STEPS = [
  100, 200, 500,
  SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND,
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR,
  DAY, 2 * DAY, 5 * DAY, 10 * DAY, 20 * DAY, 50 * DAY, 100 * DAY, 200 * DAY, 500 * DAY,
]
const TIME_UNITS: Array<[number, string]> = [[DAY, 'd'], [HOUR, 'h'], [MINUTE, 'min'], [SECOND, 's']]

/** Text for XML: the five special characters escaped, characters XML cannot hold dropped. */
export function escapeXml(s: string): string {
  return s
    // eslint-disable-next-line no-control-regex -- these are what XML 1.0 cannot hold
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDFFF]/gu, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;')
}

/** A number for a path or an attribute: one decimal at most, no "-0". */
const n1 = (v: number): string => String(Math.round(v * 10) / 10 || 0)
/** A tick label's number, without float noise ("0.3", not "0.30000000000000004"). */
const label = (v: number): string => String(Number(v.toFixed(6)))

/** A round step (1, 2, 2.5 or 5 times a power of ten) at least `raw`. */
export function niceStep(raw: number): number {
  if (!(raw > 0) || !Number.isFinite(raw)) return 1
  const pow = 10 ** Math.floor(Math.log10(raw))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= raw * (1 - 1e-9)) return m * pow
  return 10 * pow
}

/** A y-axis from 0: its top (the max with a little headroom, on a round tick, at least `minTop`) and its ticks. */
export function yAxis(max: number, minTop: number): { top: number; ticks: number[] } {
  const want = Math.max(Number.isFinite(max) ? max * 1.05 : 0, minTop)
  const step = niceStep(want / 5)
  const top = Math.max(step, Math.ceil(want / step - 1e-9) * step)
  const ticks: number[] = []
  for (let i = 0; i * step <= top * (1 + 1e-9); i++) ticks.push(Number((i * step).toPrecision(12)))
  return { top, ticks }
}

/** The x-axis ticks (ms since the first sample) for a span, 4–8 of them where the span allows, and their labels ("0", "30 s", "2 min", "1.5 h", "2 d"). */
export function timeTicks(spanMs: number): Array<{ t: number; label: string }> {
  const span = Math.max(spanMs, SECOND)
  let step = TIME_STEPS.find((s) => Math.floor(span / s) + 1 <= 8) ?? TIME_STEPS.at(-1)!
  while (Math.floor(span / step) + 1 > 8) step *= 2
  const last = Math.floor(span / step) * step
  // One unit for the whole axis: the largest that the last tick reaches and that the step is a half multiple of.
  const [unit, name] = TIME_UNITS.find(([u]) => u <= last && Number.isInteger((step / u) * 2)) ?? [SECOND, 's']
  const ticks: Array<{ t: number; label: string }> = []
  for (let t = 0; t <= span; t += step) ticks.push({ t, label: t === 0 ? '0' : `${label(t / unit)} ${name}` })
  return ticks
}

/** One line of a panel: a value per point (undefined: a gap). */
interface Line {
  colour: string
  values: Array<number | undefined>
  /** The max per point, drawn as a light band from 0 up to it. */
  band?: Array<number | undefined>
}

interface Panel {
  title: string
  /** What the y ticks are in, e.g. "%", "GiB". */
  unit: string
  /** Values are divided by this for the axis (bytes to GiB). */
  scale: number
  top: number
  ticks: number[]
  lines: Line[]
  /** Dashed horizontal lines, in the values' own units, e.g. the memory limit. */
  marks: Array<{ value: number; text: string; colour: string }>
  legend: Array<{ colour: string; text: string; band?: boolean }>
}

/** Tenths of a pixel as a path number, as short as SVG allows: 13 is "1.3", -4 is "-.4", 20 is "2". */
function tenths(t: number): string {
  const a = Math.abs(t)
  const whole = Math.floor(a / 10)
  const frac = a % 10
  if (whole === 0 && frac === 0) return '0'
  return `${t < 0 ? '-' : ''}${whole > 0 ? whole : ''}${frac > 0 ? `.${frac}` : ''}`
}

/**
 * A polyline, small: its first point absolute, then each step relative (for
 * an "l" command), every coordinate rounded to a tenth of a pixel first so the
 * steps add up to exactly the rounded points. No separator before a "-".
 */
function compact(xy: Array<[number, number]>): { x0: string; y0: string; rest: string } {
  const t = xy.map(([x, y]) => [Math.round(x * 10), Math.round(y * 10)] as const)
  let rest = ''
  for (let i = 1; i < t.length; i++) {
    for (const [j, sep] of [[0, ' '], [1, ',']] as const) {
      const num = tenths(t[i]![j] - t[i - 1]![j])
      rest += (rest === '' || num.startsWith('-') ? '' : sep) + num
    }
  }
  return { x0: String(t[0]![0] / 10), y0: String(t[0]![1] / 10), rest }
}

/** The runs of consecutive defined values: a run of one is a dot, longer ones a path. */
function runs(values: Array<number | undefined>, gapBefore: ReadonlySet<number> = new Set()): Array<Array<[number, number]>> {
  const out: Array<Array<[number, number]>> = []
  let cur: Array<[number, number]> = []
  values.forEach((v, i) => {
    // A gap in time (FGMachine was down) breaks the line as a missing value does.
    if (gapBefore.has(i) && cur.length) {
      out.push(cur)
      cur = []
    }
    if (v === undefined || !Number.isFinite(v)) {
      if (cur.length) out.push(cur)
      cur = []
    } else cur.push([i, v])
  })
  if (cur.length) out.push(cur)
  return out
}

/**
 * The points after a stretch without samples (FGMachine stopped while the
 * experiment ran on): a gap over a minute and over ten times the usual step
 * between points. Lines are not drawn across it.
 */
export function timeGaps(points: readonly SeriesPoint[]): Set<number> {
  const steps = points.slice(1).map((p, i) => p.t0 - points[i]!.t1)
  const usual = [...steps].sort((a, b) => a - b)[Math.floor(steps.length / 2)] ?? 0
  const gaps = new Set<number>()
  steps.forEach((s, i) => {
    if (s > 60_000 && s > 10 * usual) gaps.add(i + 1)
  })
  return gaps
}

function renderPanel(p: Panel, y0: number, xs: number[], gaps: ReadonlySet<number>, ticks: Array<{ t: number; label: string }>, xOf: (t: number) => number): string {
  const out: string[] = []
  const top = y0 + PANEL_TITLE_H
  const bottom = top + PLOT_H
  const yOf = (v: number): number => bottom - Math.min(Math.max(v / p.scale / p.top, 0), 1) * PLOT_H
  out.push(`<text x="${LEFT}" y="${y0 + 16}" font-size="13" font-weight="bold" fill="${TEXT}">${escapeXml(p.title)}</text>`)
  // Legend, right-aligned on the title's line.
  let lx = WIDTH - RIGHT - p.legend.reduce((w, l) => w + 28 + l.text.length * 6.5, 0)
  for (const l of p.legend) {
    out.push(l.band
      ? `<rect x="${n1(lx)}" y="${y0 + 7}" width="16" height="10" fill="${l.colour}" fill-opacity="0.2"/>`
      : `<line x1="${n1(lx)}" y1="${y0 + 12}" x2="${n1(lx + 16)}" y2="${y0 + 12}" stroke="${l.colour}" stroke-width="2"/>`)
    out.push(`<text x="${n1(lx + 20)}" y="${y0 + 16}" font-size="11" fill="${MUTED}">${escapeXml(l.text)}</text>`)
    lx += 28 + l.text.length * 6.5
  }
  // Grid and axes.
  const grid: string[] = []
  for (const v of p.ticks) {
    const y = n1(bottom - (v / p.top) * PLOT_H)
    if (v > 0) grid.push(`M${LEFT},${y}H${LEFT + PLOT_W}`)
    out.push(`<text x="${LEFT - 6}" y="${n1(Number(y) + 4)}" font-size="11" fill="${MUTED}" text-anchor="end">${v === 0 ? '0' : `${label(v)} ${p.unit}`}</text>`)
  }
  for (const tick of ticks) {
    const x = n1(xOf(tick.t))
    if (tick.t > 0) grid.push(`M${x},${top}V${bottom}`)
    out.push(`<text x="${x}" y="${bottom + 14}" font-size="11" fill="${MUTED}" text-anchor="middle">${tick.label}</text>`)
  }
  out.push(`<path d="${grid.join('')}" stroke="${GRID}" stroke-width="1" fill="none"/>`)
  out.push(`<path d="M${LEFT},${top}V${bottom}H${LEFT + PLOT_W}" stroke="${AXIS}" stroke-width="1" fill="none"/>`)
  // Bands under the lines, then the lines, then the marks on top.
  for (const line of p.lines) {
    if (!line.band) continue
    const d = runs(line.band, gaps)
      .filter((r) => r.length > 1)
      .map((r) => {
        const { x0, y0, rest } = compact(r.map(([i, v]) => [xs[i]!, yOf(v)]))
        return `M${x0},${bottom}V${y0}l${rest}V${bottom}Z`
      })
      .join('')
    if (d) out.push(`<path d="${d}" fill="${line.colour}" fill-opacity="0.18" stroke="none"/>`)
  }
  for (const line of p.lines) {
    const rs = runs(line.values, gaps)
    const d = rs
      .filter((r) => r.length > 1)
      .map((r) => {
        const { x0, y0, rest } = compact(r.map(([i, v]) => [xs[i]!, yOf(v)]))
        return `M${x0},${y0}l${rest}`
      })
      .join('')
    if (d) out.push(`<path d="${d}" fill="none" stroke="${line.colour}" stroke-width="1.5" stroke-linejoin="round"/>`)
    for (const r of rs.filter((r) => r.length === 1)) {
      const [i, v] = r[0]!
      out.push(`<circle cx="${n1(xs[i]!)}" cy="${n1(yOf(v))}" r="3" fill="${line.colour}"/>`)
    }
  }
  for (const m of p.marks) {
    const y = n1(yOf(m.value))
    out.push(`<path d="M${LEFT},${y}H${LEFT + PLOT_W}" stroke="${m.colour}" stroke-width="1.2" stroke-dasharray="6 4" fill="none"/>`)
    out.push(`<text x="${LEFT + PLOT_W - 4}" y="${n1(Number(y) - 4)}" font-size="11" fill="${m.colour}" text-anchor="end">${escapeXml(m.text)}</text>`)
  }
  return out.join('\n')
}

const maxOf = (values: Array<number | undefined>): number => values.reduce<number>((m, v) => (v !== undefined && v > m ? v : m), 0)

/** Bytes shown in MiB below a GiB, in GiB from there. */
const byteUnit = (peakBytes: number): { unit: string; scale: number } => (peakBytes >= GiB ? { unit: 'GiB', scale: GiB } : { unit: 'MiB', scale: MiB })

function panels(points: readonly SeriesPoint[], memLimit: number | undefined, gpuIndices: number[], gpuTotals: Map<number, number>): Panel[] {
  const out: Panel[] = []
  const cpuMean = points.map((p) => p.cpu?.mean)
  const cpuMax = points.map((p) => p.cpu?.max)
  if (cpuMean.some((v) => v !== undefined)) {
    const y = yAxis(maxOf(cpuMax), 100)
    out.push({
      title: 'CPU — % of one core', unit: '%', scale: 1, ...y, marks: [],
      lines: [{ colour: CPU_COLOUR, values: cpuMean, band: cpuMax }],
      legend: [{ colour: CPU_COLOUR, text: 'mean' }, { colour: CPU_COLOUR, text: 'max', band: true }],
    })
  }

  const memMean = points.map((p) => p.mem?.mean)
  const memMax = points.map((p) => p.mem?.max)
  if (memMean.some((v) => v !== undefined)) {
    const peak = maxOf(memMax)
    const drawLimit = memLimit !== undefined && memLimit > 0 && memLimit <= 4 * peak
    const shown = drawLimit ? Math.max(peak, memLimit) : peak
    const { unit, scale } = byteUnit(shown)
    const y = yAxis(shown / scale, 1)
    out.push({
      title: `Memory${memLimit !== undefined && !drawLimit ? ` (limit ${formatBytes(memLimit)})` : ''}`,
      unit, scale, ...y,
      lines: [{ colour: MEM_COLOUR, values: memMean, band: memMax }],
      marks: drawLimit ? [{ value: memLimit, text: `limit ${formatBytes(memLimit)}`, colour: LIMIT }] : [],
      legend: [{ colour: MEM_COLOUR, text: 'mean' }, { colour: MEM_COLOUR, text: 'max', band: true }, ...(drawLimit ? [{ colour: LIMIT, text: 'limit' }] : [])],
    })
  }

  const gpuLegend = gpuIndices.map((index, i) => ({ colour: GPU_COLOURS[i % GPU_COLOURS.length]!, text: `GPU ${index}` }))
  const gpuValue = (p: SeriesPoint, index: number, field: 'util' | 'mem'): number | undefined => p.gpus?.find((g) => g.index === index)?.[field]?.mean
  const util = gpuIndices.map((index) => points.map((p) => gpuValue(p, index, 'util')))
  if (util.some((vs) => vs.some((v) => v !== undefined))) {
    const peak = Math.max(...util.map(maxOf))
    // Utilisation is at most 100 %: the axis stops there unless a reading says more.
    const y = peak <= 100 ? yAxis(0, 100) : yAxis(peak, 100)
    out.push({
      title: 'GPU utilisation — %', unit: '%', scale: 1, ...y, marks: [],
      lines: util.map((values, i) => ({ colour: gpuLegend[i]!.colour, values })),
      legend: gpuLegend,
    })
  }

  const mem = gpuIndices.map((index) => points.map((p) => gpuValue(p, index, 'mem')))
  if (mem.some((vs) => vs.some((v) => v !== undefined))) {
    // One dashed line per distinct total (GPUs of one model share one).
    const totals = [...new Set(gpuIndices.map((i) => gpuTotals.get(i)).filter((v): v is number => v !== undefined && v > 0))].sort((a, b) => a - b)
    const shownMiB = Math.max(...mem.map(maxOf), ...totals)
    const { unit, scale } = byteUnit(shownMiB * MiB)
    const y = yAxis(shownMiB / (scale / MiB), 1)
    out.push({
      title: 'GPU memory', unit, scale: scale / MiB, ...y,
      lines: mem.map((values, i) => ({ colour: gpuLegend[i]!.colour, values })),
      marks: totals.map((v) => ({ value: v, text: `total ${formatMiB(v)}`, colour: MUTED })),
      legend: gpuLegend,
    })
  }
  return out
}

function header(title: string, subtitle: string | undefined): { svg: string; height: number } {
  const clip = (s: string): string => (s.length > MAX_TITLE ? `${s.slice(0, MAX_TITLE - 1)}…` : s)
  const lines = [`<text x="${LEFT}" y="24" font-size="16" font-weight="bold" fill="${TEXT}">${escapeXml(clip(title))}</text>`]
  if (subtitle) lines.push(`<text x="${LEFT}" y="43" font-size="12" fill="${MUTED}">${escapeXml(clip(subtitle))}</text>`)
  return { svg: lines.join('\n'), height: subtitle ? 58 : 38 }
}

function svgDocument(height: number, title: string, body: string): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    body,
    '</svg>',
    '',
  ].join('\n')
}

/**
 * The chart of a series: a standalone SVG document, ~900 px wide, with a
 * panel each for CPU, memory, GPU utilisation and GPU memory (those without
 * any data left out), over the time since the first sample.
 */
export function renderSystemChart(series: SystemSeries, opts: { title: string; subtitle?: string }): string {
  const points = series.points
  const head = header(opts.title, opts.subtitle)
  if (points.length === 0) {
    const height = head.height + 30
    return svgDocument(height, opts.title, `${head.svg}\n<text x="${LEFT}" y="${head.height + 14}" font-size="13" fill="${MUTED}">no samples: the experiment ended before the first one</text>`)
  }
  const totals = series.totals()
  const gpuIndices = [...new Set(points.flatMap((p) => p.gpus?.map((g) => g.index) ?? []))].sort((a, b) => a - b)
  const gpuTotals = new Map(totals.gpus.filter((g) => g.memTotal !== undefined).map((g) => [g.index, g.memTotal!]))
  const ps = panels(points, totals.memLimit, gpuIndices, gpuTotals)
  if (ps.length === 0) {
    const height = head.height + 30
    return svgDocument(height, opts.title, `${head.svg}\n<text x="${LEFT}" y="${head.height + 14}" font-size="13" fill="${MUTED}">no CPU, memory or GPU readings in ${points.reduce((s, p) => s + p.n, 0)} sample(s)</text>`)
  }

  const start = points[0]!.t0
  const span = points.at(-1)!.t1 - start
  const ticks = timeTicks(span)
  const domain = Math.max(span, SECOND)
  const xOf = (t: number): number => LEFT + (t / domain) * PLOT_W
  // Each point at the middle of the time it covers.
  const xs = points.map((p) => xOf((p.t0 + p.t1) / 2 - start))
  const gaps = timeGaps(points)

  const body = [head.svg]
  ps.forEach((p, i) => body.push(renderPanel(p, head.height + i * PANEL_H, xs, gaps, ticks, xOf)))
  const captionY = head.height + ps.length * PANEL_H + 4
  body.push(`<text x="${LEFT + PLOT_W / 2}" y="${captionY}" font-size="11" fill="${MUTED}" text-anchor="middle">time since the first sample</text>`)
  return svgDocument(captionY + CAPTION_H - 8, opts.title, body.join('\n'))
}

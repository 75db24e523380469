/**
 * A bounded, uniformly downsampled series of one experiment's system samples,
 * plus exact running totals over every sample. Pure: no I/O.
 *
 * The series holds at most `maxPoints` points whatever the run's length. Each
 * point summarises up to `k` consecutive samples (the bucket size, starting at
 * 1): the newest point takes samples until it holds `k`; when a new point is
 * needed and there are already `maxPoints`, adjacent pairs are merged and `k`
 * doubles, so every point covers about the same number of samples.
 */
import type { SystemSample } from './types.js'

export interface Stat { mean: number; max: number }
export interface GpuPoint { index: number; util?: Stat; mem?: Stat /* MiB */; memTotal?: number /* MiB */ }
export interface SeriesPoint { t0: number; t1: number; n: number; cpu?: Stat; mem?: Stat /* bytes */; memLimit?: number; gpus?: GpuPoint[] }
export interface Totals {
  /** Samples added (ignored ones not counted). */
  samples: number
  /** Time of the first sample, ms since the epoch. */
  startMs?: number
  /** Time of the last sample, ms since the epoch. */
  lastMs?: number
  /** CPU, percent of one core. */
  cpu?: Stat
  /** Memory in use, bytes. */
  mem?: Stat
  /** The latest known memory limit, bytes. */
  memLimit?: number
  /** Per GPU (by nvidia-smi index, ascending): utilisation in percent, memory in MiB. */
  gpus: Array<{ index: number; util?: Stat; mem?: Stat; memTotal?: number }>
}

export const DEFAULT_MAX_POINTS = 600
const FORMAT_VERSION = 1

/** A running sum, count and max of one field: means stay exact when merged, whatever samples lacked the field. */
interface Acc { sum: number; count: number; max: number }

interface GpuAcc { util?: Acc; mem?: Acc; memTotal?: number }

interface Bucket {
  t0: number
  t1: number
  n: number
  cpu?: Acc
  mem?: Acc
  memLimit?: number
  gpus?: Map<number, GpuAcc>
}

const usable = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v)

function accAdd(a: Acc | undefined, v: number | undefined): Acc | undefined {
  if (!usable(v)) return a
  if (!a) return { sum: v, count: 1, max: v }
  a.sum += v
  a.count += 1
  if (v > a.max) a.max = v
  return a
}

function accMerge(a: Acc | undefined, b: Acc | undefined): Acc | undefined {
  if (!a) return b ? { ...b } : undefined
  if (!b) return { ...a }
  return { sum: a.sum + b.sum, count: a.count + b.count, max: Math.max(a.max, b.max) }
}

const stat = (a: Acc | undefined): Stat | undefined => (a && a.count > 0 ? { mean: a.sum / a.count, max: a.max } : undefined)

function gpuAdd(gpus: Map<number, GpuAcc>, sample: SystemSample): void {
  for (const g of sample.gpus ?? []) {
    if (!g || !Number.isInteger(g.index)) continue
    const acc = gpus.get(g.index) ?? {}
    acc.util = accAdd(acc.util, g.utilPct)
    acc.mem = accAdd(acc.mem, g.memoryUsedMiB)
    if (usable(g.memoryTotalMiB)) acc.memTotal = g.memoryTotalMiB
    if (acc.util || acc.mem || acc.memTotal !== undefined) gpus.set(g.index, acc)
  }
}

function gpuList(gpus: Map<number, GpuAcc> | undefined): Array<{ index: number; util?: Stat; mem?: Stat; memTotal?: number }> {
  if (!gpus) return []
  return [...gpus.entries()]
    .sort(([a], [b]) => a - b)
    .map(([index, g]) => {
      const out: GpuPoint = { index }
      const util = stat(g.util)
      const mem = stat(g.mem)
      if (util) out.util = util
      if (mem) out.mem = mem
      if (g.memTotal !== undefined) out.memTotal = g.memTotal
      return out
    })
}

function mergeBuckets(a: Bucket, b: Bucket): Bucket {
  const out: Bucket = { t0: a.t0, t1: b.t1, n: a.n + b.n }
  const cpu = accMerge(a.cpu, b.cpu)
  const mem = accMerge(a.mem, b.mem)
  if (cpu) out.cpu = cpu
  if (mem) out.mem = mem
  const memLimit = b.memLimit ?? a.memLimit
  if (memLimit !== undefined) out.memLimit = memLimit
  if (a.gpus || b.gpus) {
    const gpus = new Map<number, GpuAcc>()
    for (const index of new Set([...(a.gpus?.keys() ?? []), ...(b.gpus?.keys() ?? [])])) {
      const ga = a.gpus?.get(index)
      const gb = b.gpus?.get(index)
      const g: GpuAcc = {}
      const util = accMerge(ga?.util, gb?.util)
      const gmem = accMerge(ga?.mem, gb?.mem)
      if (util) g.util = util
      if (gmem) g.mem = gmem
      const memTotal = gb?.memTotal ?? ga?.memTotal
      if (memTotal !== undefined) g.memTotal = memTotal
      gpus.set(index, g)
    }
    out.gpus = gpus
  }
  return out
}

function toPoint(b: Bucket): SeriesPoint {
  const p: SeriesPoint = { t0: b.t0, t1: b.t1, n: b.n }
  const cpu = stat(b.cpu)
  const mem = stat(b.mem)
  if (cpu) p.cpu = cpu
  if (mem) p.mem = mem
  if (b.memLimit !== undefined) p.memLimit = b.memLimit
  const gpus = gpuList(b.gpus)
  if (gpus.length > 0) p.gpus = gpus
  return p
}

// ---- The on-disk shape (v1) -------------------------------------------------
// An accumulator is [sum, count, max]; a GPU is { i, u?, m?, total? }.

type AccJSON = [number, number, number]
interface GpuJSON { i: number; u?: AccJSON; m?: AccJSON; total?: number }
interface BucketJSON { t0: number; t1: number; n: number; cpu?: AccJSON; mem?: AccJSON; limit?: number; gpus?: GpuJSON[] }
interface SeriesJSON {
  v: typeof FORMAT_VERSION
  maxPoints: number
  k: number
  samples: number
  start?: number
  last?: number
  cpu?: AccJSON
  mem?: AccJSON
  limit?: number
  gpus?: GpuJSON[]
  points: BucketJSON[]
}

const accJSON = (a: Acc): AccJSON => [a.sum, a.count, a.max]

function gpusJSON(gpus: Map<number, GpuAcc>): GpuJSON[] {
  return [...gpus.entries()]
    .sort(([a], [b]) => a - b)
    .map(([i, g]) => {
      const out: GpuJSON = { i }
      if (g.util) out.u = accJSON(g.util)
      if (g.mem) out.m = accJSON(g.mem)
      if (g.memTotal !== undefined) out.total = g.memTotal
      return out
    })
}

function bucketJSON(b: Bucket): BucketJSON {
  const out: BucketJSON = { t0: b.t0, t1: b.t1, n: b.n }
  if (b.cpu) out.cpu = accJSON(b.cpu)
  if (b.mem) out.mem = accJSON(b.mem)
  if (b.memLimit !== undefined) out.limit = b.memLimit
  if (b.gpus && b.gpus.size > 0) out.gpus = gpusJSON(b.gpus)
  return out
}

/** Reads the on-disk shape back, saying where it is wrong. */
class Reader {
  fail(path: string, what: string): never {
    throw new Error(`not a saved system series: ${path} ${what}`)
  }

  object(x: unknown, path: string): Record<string, unknown> {
    if (typeof x !== 'object' || x === null || Array.isArray(x)) this.fail(path, 'is not an object')
    return x as Record<string, unknown>
  }

  num(x: unknown, path: string): number {
    if (!usable(x)) this.fail(path, `is not a finite number (${describe(x)})`)
    return x
  }

  int(x: unknown, path: string, min: number): number {
    const v = this.num(x, path)
    if (!Number.isSafeInteger(v) || v < min) this.fail(path, `is not a whole number >= ${min} (${v})`)
    return v
  }

  optNum(x: unknown, path: string): number | undefined {
    return x === undefined ? undefined : this.num(x, path)
  }

  acc(x: unknown, path: string, maxCount: number): Acc | undefined {
    if (x === undefined) return undefined
    if (!Array.isArray(x) || x.length !== 3) this.fail(path, 'is not [sum, count, max]')
    const sum = this.num(x[0], `${path}[0] (sum)`)
    const count = this.int(x[1], `${path}[1] (count)`, 1)
    const max = this.num(x[2], `${path}[2] (max)`)
    if (count > maxCount) this.fail(`${path}[1] (count)`, `is ${count}, more than the ${maxCount} samples it covers`)
    return { sum, count, max }
  }

  gpus(x: unknown, path: string, maxCount: number): Map<number, GpuAcc> | undefined {
    if (x === undefined) return undefined
    if (!Array.isArray(x)) this.fail(path, 'is not an array')
    const out = new Map<number, GpuAcc>()
    x.forEach((item, j) => {
      const p = `${path}[${j}]`
      const o = this.object(item, p)
      const i = this.int(o.i, `${p}.i`, 0)
      if (out.has(i)) this.fail(`${p}.i`, `repeats GPU ${i}`)
      const g: GpuAcc = {}
      const util = this.acc(o.u, `${p}.u`, maxCount)
      const mem = this.acc(o.m, `${p}.m`, maxCount)
      const total = this.optNum(o.total, `${p}.total`)
      if (util) g.util = util
      if (mem) g.mem = mem
      if (total !== undefined) g.memTotal = total
      out.set(i, g)
    })
    return out
  }
}

function describe(x: unknown): string {
  if (x === undefined) return 'missing'
  if (x === null) return 'null'
  if (Array.isArray(x)) return 'an array'
  if (typeof x === 'object') return 'an object'
  const s = typeof x === 'string' ? JSON.stringify(x) : String(x)
  return s.length > 40 ? `${s.slice(0, 40)}…` : s
}

export class SystemSeries {
  readonly maxPoints: number
  /** Samples per point: the newest point takes samples until it holds this many. */
  #k = 1
  #buckets: Bucket[] = []
  // Running totals over every sample ever added.
  #samples = 0
  #startMs: number | undefined
  #lastMs: number | undefined
  #cpu: Acc | undefined
  #mem: Acc | undefined
  #memLimit: number | undefined
  #gpus = new Map<number, GpuAcc>()

  constructor(opts?: { maxPoints?: number }) {
    const maxPoints = opts?.maxPoints ?? DEFAULT_MAX_POINTS
    if (!Number.isSafeInteger(maxPoints) || maxPoints < 4) throw new RangeError(`maxPoints must be a whole number >= 4 (got ${maxPoints})`)
    this.maxPoints = maxPoints
  }

  /** Samples per point now (1, then doubling each time the points are halved). */
  get bucketSize(): number {
    return this.#k
  }

  /** Adds one sample. Samples come in time order: one older than the last (or without a usable time) is ignored. */
  add(sample: SystemSample): void {
    if (!sample || !usable(sample.t)) return
    if (this.#lastMs !== undefined && sample.t < this.#lastMs) return

    this.#samples += 1
    this.#startMs ??= sample.t
    this.#lastMs = sample.t
    this.#cpu = accAdd(this.#cpu, sample.cpuPct)
    this.#mem = accAdd(this.#mem, sample.memoryBytes)
    if (usable(sample.memoryLimitBytes)) this.#memLimit = sample.memoryLimitBytes
    gpuAdd(this.#gpus, sample)

    let last = this.#buckets.at(-1)
    if (!last || last.n >= this.#k) {
      if (this.#buckets.length >= this.maxPoints) this.#halve()
      last = { t0: sample.t, t1: sample.t, n: 0 }
      this.#buckets.push(last)
    }
    last.t1 = sample.t
    last.n += 1
    const cpu = accAdd(last.cpu, sample.cpuPct)
    const mem = accAdd(last.mem, sample.memoryBytes)
    if (cpu) last.cpu = cpu
    if (mem) last.mem = mem
    if (usable(sample.memoryLimitBytes)) last.memLimit = sample.memoryLimitBytes
    if (sample.gpus && sample.gpus.length > 0) {
      last.gpus ??= new Map()
      gpuAdd(last.gpus, sample)
      if (last.gpus.size === 0) delete last.gpus
    }
  }

  /** Merges adjacent pairs of points (an odd last one stays as it is, the newest, still filling) and doubles the bucket size. */
  #halve(): void {
    const merged: Bucket[] = []
    for (let i = 0; i < this.#buckets.length; i += 2) {
      const a = this.#buckets[i]!
      const b = this.#buckets[i + 1]
      merged.push(b ? mergeBuckets(a, b) : a)
    }
    this.#buckets = merged
    this.#k *= 2
  }

  /** The points, oldest first: at most maxPoints, each covering up to bucketSize samples. */
  get points(): readonly SeriesPoint[] {
    return Object.freeze(this.#buckets.map(toPoint))
  }

  /** Exact over every sample ever added, whatever the downsampling. */
  totals(): Totals {
    const out: Totals = { samples: this.#samples, gpus: gpuList(this.#gpus) }
    if (this.#startMs !== undefined) out.startMs = this.#startMs
    if (this.#lastMs !== undefined) out.lastMs = this.#lastMs
    const cpu = stat(this.#cpu)
    const mem = stat(this.#mem)
    if (cpu) out.cpu = cpu
    if (mem) out.mem = mem
    if (this.#memLimit !== undefined) out.memLimit = this.#memLimit
    return out
  }

  /** A small, versioned plain object (points with their per-field sums and counts, the running totals, the bucket size), for JSON. */
  toJSON(): SeriesJSON {
    const out: SeriesJSON = { v: FORMAT_VERSION, maxPoints: this.maxPoints, k: this.#k, samples: this.#samples, points: [] }
    if (this.#startMs !== undefined) out.start = this.#startMs
    if (this.#lastMs !== undefined) out.last = this.#lastMs
    if (this.#cpu) out.cpu = accJSON(this.#cpu)
    if (this.#mem) out.mem = accJSON(this.#mem)
    if (this.#memLimit !== undefined) out.limit = this.#memLimit
    if (this.#gpus.size > 0) out.gpus = gpusJSON(this.#gpus)
    out.points = this.#buckets.map(bucketJSON)
    return out
  }

  /** The series toJSON() saved. Throws an Error saying what is wrong when `x` is not one (a corrupt or foreign file). */
  static fromJSON(x: unknown): SystemSeries {
    const r: Reader = new Reader()
    const o = r.object(x, 'the value')
    if (o.v !== FORMAT_VERSION) r.fail('v', `is ${describe(o.v)}, not ${FORMAT_VERSION} (an unknown format version)`)
    const maxPoints = r.int(o.maxPoints, 'maxPoints', 4)
    const k = r.int(o.k, 'k', 1)
    if (!Number.isInteger(Math.log2(k))) r.fail('k', `is ${k}, not a power of 2`)
    const samples = r.int(o.samples, 'samples', 0)
    const start = r.optNum(o.start, 'start')
    const last = r.optNum(o.last, 'last')
    if (samples > 0 && (start === undefined || last === undefined)) r.fail('start/last', 'are missing though there are samples')
    if (start !== undefined && last !== undefined && last < start) r.fail('last', `(${last}) is before start (${start})`)
    const points = o.points
    if (!Array.isArray(points)) r.fail('points', 'is not an array')
    if (points.length > maxPoints) r.fail('points', `holds ${points.length} points, more than maxPoints (${maxPoints})`)

    const s = new SystemSeries({ maxPoints })
    let covered = 0
    let prevT1 = -Infinity
    s.#buckets = points.map((item: unknown, j) => {
      const p = `points[${j}]`
      const po = r.object(item, p)
      const t0 = r.num(po.t0, `${p}.t0`)
      const t1 = r.num(po.t1, `${p}.t1`)
      const n = r.int(po.n, `${p}.n`, 1)
      if (t1 < t0) r.fail(`${p}.t1`, `(${t1}) is before its t0 (${t0})`)
      if (t0 < prevT1) r.fail(`${p}.t0`, `(${t0}) is before the previous point's t1 (${prevT1})`)
      if (n > k) r.fail(`${p}.n`, `is ${n}, more than the bucket size k (${k})`)
      prevT1 = t1
      covered += n
      const b: Bucket = { t0, t1, n }
      const cpu = r.acc(po.cpu, `${p}.cpu`, n)
      const mem = r.acc(po.mem, `${p}.mem`, n)
      const limit = r.optNum(po.limit, `${p}.limit`)
      const gpus = r.gpus(po.gpus, `${p}.gpus`, n)
      if (cpu) b.cpu = cpu
      if (mem) b.mem = mem
      if (limit !== undefined) b.memLimit = limit
      if (gpus && gpus.size > 0) b.gpus = gpus
      return b
    })
    if (covered !== samples) r.fail('points', `cover ${covered} samples, but samples is ${samples}`)
    const first = s.#buckets[0]
    const lastBucket = s.#buckets.at(-1)
    if (first && lastBucket && (first.t0 !== start || lastBucket.t1 !== last)) r.fail('start/last', 'do not match the first and last points')

    s.#k = k
    s.#samples = samples
    s.#startMs = start
    s.#lastMs = last
    s.#cpu = r.acc(o.cpu, 'cpu', samples)
    s.#mem = r.acc(o.mem, 'mem', samples)
    s.#memLimit = r.optNum(o.limit, 'limit')
    s.#gpus = r.gpus(o.gpus, 'gpus', samples) ?? new Map()
    return s
  }
}

import t, { type Test } from 'tap'
import { type SeriesPoint, type Stat, SystemSeries } from '../../src/sysstats/series.js'
import type { SystemSample } from '../../src/sysstats/types.js'

const T0 = 1_700_000_000_000

/** A deterministic pseudo-random stream in [0, 1). */
function lcg(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

/** Samples every 5 s with every field sometimes missing, GPUs 3 and 1 listed in either order and GPU 1 sometimes absent. */
function samples(count: number, seed = 1): SystemSample[] {
  const r = lcg(seed)
  const out: SystemSample[] = []
  for (let i = 0; i < count; i++) {
    const s: SystemSample = { t: T0 + i * 5000 }
    if (r() > 0.1) s.cpuPct = Math.round(r() * 4000) / 10
    if (r() > 0.2) s.memoryBytes = Math.round(r() * 8 * 2 ** 30)
    if (r() > 0.5) s.memoryLimitBytes = 16 * 2 ** 30 + (i % 3) * 2 ** 20
    if (r() > 0.05) {
      const g3 = { index: 3, utilPct: r() > 0.1 ? Math.round(r() * 100) : undefined, memoryUsedMiB: Math.round(r() * 80_000), memoryTotalMiB: 81_920 }
      const g1 = { index: 1, utilPct: Math.round(r() * 100), memoryUsedMiB: r() > 0.3 ? Math.round(r() * 40_000) : undefined }
      s.gpus = r() > 0.5 ? [g3, g1] : r() > 0.3 ? [g1, g3] : [g3]
    }
    out.push(s)
  }
  return out
}

/** Mean and max of the defined values, by brute force; undefined when none. */
function brute(values: Array<number | undefined>): Stat | undefined {
  const vs = values.filter((v): v is number => v !== undefined)
  if (vs.length === 0) return undefined
  let sum = 0
  let max = -Infinity
  for (const v of vs) {
    sum += v
    if (v > max) max = v
  }
  return { mean: sum / vs.length, max }
}

const gpu = (s: SystemSample, index: number) => s.gpus?.find((g) => g.index === index)

/** Each point checked against the samples it covers (they follow each other: the points' n split the samples in order). */
function checkPoints(t: Test, points: readonly SeriesPoint[], all: SystemSample[]): void {
  let at = 0
  let bad = 0
  const close = (a: Stat | undefined, b: Stat | undefined) =>
    a === undefined ? b === undefined : b !== undefined && Math.abs(a.mean - b.mean) <= 1e-9 * Math.max(1, Math.abs(b.mean)) && a.max === b.max
  for (const p of points) {
    const covered = all.slice(at, at + p.n)
    at += p.n
    const ok =
      p.t0 === covered[0]!.t &&
      p.t1 === covered.at(-1)!.t &&
      close(p.cpu, brute(covered.map((s) => s.cpuPct))) &&
      close(p.mem, brute(covered.map((s) => s.memoryBytes))) &&
      [1, 3].every((i) => {
        const g = p.gpus?.find((x) => x.index === i)
        return close(g?.util, brute(covered.map((s) => gpu(s, i)?.utilPct))) && close(g?.mem, brute(covered.map((s) => gpu(s, i)?.memoryUsedMiB)))
      })
    if (!ok) bad++
  }
  t.equal(bad, 0, 'every point is the weighted mean and the max of the samples it covers')
  t.equal(at, all.length, 'the points cover every sample')
}

t.test('maxPoints: 600 by default, at least 4', async (t) => {
  t.equal(new SystemSeries().maxPoints, 600)
  t.equal(new SystemSeries({}).maxPoints, 600)
  t.equal(new SystemSeries({ maxPoints: 4 }).maxPoints, 4)
  for (const bad of [3, 0, -1, 4.5, Number.NaN, Infinity]) {
    t.throws(() => new SystemSeries({ maxPoints: bad }), RangeError, `${bad} is refused`)
  }
})

t.test('one point per sample until the points fill up; an older sample is ignored', async (t) => {
  const s = new SystemSeries({ maxPoints: 4 })
  t.strictSame(s.points, [])
  t.strictSame(s.totals(), { samples: 0, gpus: [] })
  s.add({ t: T0, cpuPct: 100, memoryBytes: 1000, memoryLimitBytes: 5000 })
  s.add({ t: T0 + 1000, cpuPct: 50 })
  s.add({ t: T0 + 500, cpuPct: 999, memoryBytes: 999_999 })
  s.add({ t: T0 + 1000, memoryBytes: 3000 }) // the same time is not older
  s.add({ t: Number.NaN, cpuPct: 999 })
  t.strictSame(s.points, [
    { t0: T0, t1: T0, n: 1, cpu: { mean: 100, max: 100 }, mem: { mean: 1000, max: 1000 }, memLimit: 5000 },
    { t0: T0 + 1000, t1: T0 + 1000, n: 1, cpu: { mean: 50, max: 50 } },
    { t0: T0 + 1000, t1: T0 + 1000, n: 1, mem: { mean: 3000, max: 3000 } },
  ])
  t.strictSame(s.totals(), { samples: 3, startMs: T0, lastMs: T0 + 1000, cpu: { mean: 75, max: 100 }, mem: { mean: 2000, max: 3000 }, memLimit: 5000, gpus: [] })
  t.equal(s.bucketSize, 1)
})

t.test('merging: weighted by each field\'s own count, a missing value is not a 0', async (t) => {
  const s = new SystemSeries({ maxPoints: 4 })
  const cpu = [10, undefined, 30, 40, 50, 60, 70, undefined, 90]
  const mem = [undefined, undefined, 100, undefined, 300, undefined, undefined, undefined, 500]
  cpu.forEach((c, i) => s.add({ t: T0 + i * 1000, cpuPct: c, memoryBytes: mem[i] }))
  // 4 points of 1, halved at the 5th sample into 2 of 2 (k = 2), filled to 4 points, halved again at the 9th (k = 4).
  t.equal(s.bucketSize, 4)
  t.strictSame(s.points.map((p) => p.n), [4, 4, 1])
  const [a, b, c] = s.points
  t.strictSame(a!.cpu, { mean: 80 / 3, max: 40 }, 'the mean of 10, 30 and 40: the missing one is not counted')
  t.strictSame(a!.mem, { mean: 100, max: 100 })
  t.strictSame(b!.cpu, { mean: 60, max: 70 }, '50, 60, 70')
  t.strictSame(b!.mem, { mean: 300, max: 300 })
  t.strictSame(c, { t0: T0 + 8000, t1: T0 + 8000, n: 1, cpu: { mean: 90, max: 90 }, mem: { mean: 500, max: 500 } })
  t.equal(a!.t0, T0)
  t.equal(a!.t1, T0 + 3000)
  t.equal(b!.t0, T0 + 4000)
  t.equal(b!.t1, T0 + 7000)
  t.strictSame(s.totals().cpu, { mean: 350 / 7, max: 90 })
  t.strictSame(s.totals().mem, { mean: 300, max: 500 })
})

t.test('an odd maxPoints: the last point is left unmerged and goes on filling', async (t) => {
  const s = new SystemSeries({ maxPoints: 5 })
  const all = samples(40, 7)
  all.forEach((x, i) => {
    s.add(x)
    t.ok(s.points.length <= 5, `${i + 1} samples: ${s.points.length} points`)
    t.ok(s.points.every((p) => p.n <= s.bucketSize))
  })
  checkPoints(t, s.points, all)
})

t.test('GPUs matched by index whatever their order; memLimit and memTotal are the latest known', async (t) => {
  const s = new SystemSeries({ maxPoints: 4 })
  s.add({ t: T0, memoryLimitBytes: 100, gpus: [{ index: 2, utilPct: 10, memoryUsedMiB: 5, memoryTotalMiB: 80 }, { index: 0, utilPct: 90 }] })
  s.add({ t: T0 + 1, gpus: [{ index: 0, utilPct: 70, memoryUsedMiB: 1, memoryTotalMiB: 40 }, { index: 2, utilPct: Number.NaN }] })
  s.add({ t: T0 + 2, memoryLimitBytes: 200, gpus: [{ index: 2, utilPct: 30, memoryTotalMiB: 81 }] })
  s.add({ t: T0 + 3, cpuPct: 1 })
  s.add({ t: T0 + 4, cpuPct: 3 }) // halves: [0+1], [2+3], [4]
  t.strictSame(s.points[0]!.gpus, [
    { index: 0, util: { mean: 80, max: 90 }, mem: { mean: 1, max: 1 }, memTotal: 40 },
    { index: 2, util: { mean: 10, max: 10 }, mem: { mean: 5, max: 5 }, memTotal: 80 },
  ])
  t.equal(s.points[0]!.memLimit, 100)
  t.strictSame(s.points[1]!.gpus, [{ index: 2, util: { mean: 30, max: 30 }, memTotal: 81 }])
  t.equal(s.points[1]!.memLimit, 200)
  t.equal(s.points[2]!.gpus, undefined, 'no GPU readings in a point: no gpus')
  t.equal(s.points[2]!.memLimit, undefined)
  const tot = s.totals()
  t.equal(tot.memLimit, 200)
  t.strictSame(tot.gpus, [
    { index: 0, util: { mean: 80, max: 90 }, mem: { mean: 1, max: 1 }, memTotal: 40 },
    { index: 2, util: { mean: 20, max: 30 }, mem: { mean: 5, max: 5 }, memTotal: 81 },
  ])
  t.strictSame(tot.cpu, { mean: 2, max: 3 })
})

t.test('200,000 samples: bounded, uniform, totals exact', async (t) => {
  const all = samples(200_000, 42)
  const s = new SystemSeries()
  let maxLen = 0
  all.forEach((x, i) => {
    s.add(x)
    if (i % 997 === 0) maxLen = Math.max(maxLen, s.points.length)
  })
  t.ok(maxLen <= 600, `at most 600 points all along (${maxLen})`)
  t.ok(s.points.length <= 600)
  t.equal(s.bucketSize, 512, '600 × 256 < 200,000 <= 600 × 512')
  t.equal(s.points.length, Math.ceil(200_000 / 512))
  t.ok(s.points.slice(0, -1).every((p) => p.n === 512), 'every point but the newest holds k samples')
  checkPoints(t, s.points, all)

  const tot = s.totals()
  t.equal(tot.samples, 200_000)
  t.equal(tot.startMs, all[0]!.t)
  t.equal(tot.lastMs, all.at(-1)!.t)
  // Summed in the same order as the series: exactly equal, not just close.
  t.strictSame(tot.cpu, brute(all.map((x) => x.cpuPct)))
  t.strictSame(tot.mem, brute(all.map((x) => x.memoryBytes)))
  t.equal(tot.memLimit, all.findLast((x) => x.memoryLimitBytes !== undefined)!.memoryLimitBytes)
  t.strictSame(tot.gpus, [1, 3].map((i) => {
    const g: Record<string, unknown> = { index: i }
    const util = brute(all.map((x) => gpu(x, i)?.utilPct))
    const mem = brute(all.map((x) => gpu(x, i)?.memoryUsedMiB))
    if (util) g.util = util
    if (mem) g.mem = mem
    if (i === 3) g.memTotal = 81_920
    return g
  }))
  const json = JSON.stringify(s.toJSON())
  t.ok(json.length < 200_000, `its JSON is small: ${json.length} bytes`)
})

t.test('toJSON / fromJSON: the same points and totals, and the same after more samples', async (t) => {
  for (const [maxPoints, before] of [[600, 0], [600, 1], [16, 1234], [7, 100], [4, 3]] as const) {
    const all = samples(before + 777, maxPoints + before)
    const a = new SystemSeries({ maxPoints })
    all.slice(0, before).forEach((x) => a.add(x))
    const b = SystemSeries.fromJSON(JSON.parse(JSON.stringify(a.toJSON())))
    const what = `maxPoints ${maxPoints}, ${before} samples`
    t.equal(b.maxPoints, maxPoints, what)
    t.equal(b.bucketSize, a.bucketSize, what)
    t.strictSame(b.points, a.points, what)
    t.strictSame(b.totals(), a.totals(), what)
    t.strictSame(b.toJSON(), a.toJSON(), what)
    for (const x of all.slice(before)) {
      a.add(x)
      b.add(x)
    }
    t.strictSame(b.points, a.points, `${what}, then 777 more`)
    t.strictSame(b.totals(), a.totals(), `${what}, then 777 more`)
    t.equal(b.bucketSize, a.bucketSize)
    if (before > 0) b.add({ t: all[0]!.t, cpuPct: 1 })
    t.strictSame(b.totals(), a.totals(), 'the restored series still ignores older samples')
  }
  t.match(new SystemSeries().toJSON(), { v: 1 })
})

t.test('fromJSON: garbage is refused, saying what is wrong', async (t) => {
  const s = new SystemSeries({ maxPoints: 8 })
  samples(30, 3).forEach((x) => s.add(x))
  const good = () => JSON.parse(JSON.stringify(s.toJSON())) as Record<string, unknown> & { points: Array<Record<string, unknown>> }
  const cases: Array<[unknown, RegExp]> = [
    [null, /the value is not an object/],
    ['{"v":1}', /the value is not an object/],
    [[], /the value is not an object/],
    [{}, /v is missing, not 1/],
    [{ ...good(), v: 2 }, /v is 2, not 1 \(an unknown format version\)/],
    [{ ...good(), maxPoints: 3 }, /maxPoints is not a whole number >= 4/],
    [{ ...good(), k: 3 }, /k is 3, not a power of 2/],
    [{ ...good(), k: '4' }, /k is not a finite number \("4"\)/],
    [{ ...good(), points: {} }, /points is not an array/],
    [{ ...good(), maxPoints: 4 }, /points holds \d+ points, more than maxPoints \(4\)/],
    [{ ...good(), samples: 31 }, /points cover 30 samples, but samples is 31/],
    [{ ...good(), cpu: [1, 2] }, /cpu is not \[sum, count, max\]/],
    [{ ...good(), cpu: [1, 31, 2] }, /cpu\[1\] \(count\) is 31, more than the 30 samples it covers/],
    [{ ...good(), gpus: [{ i: -1 }] }, /gpus\[0\]\.i is not a whole number >= 0/],
    [{ ...good(), start: undefined }, /start\/last are missing though there are samples/],
    [{ ...good(), last: 1 }, /last \(1\) is before start/],
  ]
  const edit = (f: (x: ReturnType<typeof good>) => void) => {
    const x = good()
    f(x)
    return x
  }
  cases.push(
    [edit((x) => { x.points[1]!.cpu = [1, 0, 1] }), /points\[1\]\.cpu\[1\] \(count\) is not a whole number >= 1/],
    [edit((x) => { x.points[1]!.n = 9 }), /points\[1\]\.n is 9, more than the bucket size k/],
    [edit((x) => { x.points[2]!.t0 = 0 }), /points\[2\]\.t0 \(0\) is before the previous point's t1/],
    [edit((x) => { x.points[0]!.t1 = 0 }), /points\[0\]\.t1 \(0\) is before its t0/],
    [edit((x) => { x.points[0]!.mem = [Number.NaN, 1, 1] }), /points\[0\]\.mem\[0\] \(sum\) is not a finite number \(null\)/], // NaN is null in JSON
    [edit((x) => { x.points[0]!.gpus = [{ i: 1 }, { i: 1 }] }), /points\[0\]\.gpus\[1\]\.i repeats GPU 1/],
    [edit((x) => { x.points[3] = 'x' as never }), /points\[3\] is not an object/],
    [edit((x) => { x.points[0]!.t0 = x.points[0]!.t0 as number + 1 }), /start\/last do not match the first and last points/],
  )
  for (const [x, message] of cases) {
    const input = JSON.parse(JSON.stringify(x ?? null)) as unknown
    t.throws(() => SystemSeries.fromJSON(input), { message }, String(message))
  }

  // Any value anywhere replaced by something else: refused with a message, or read; never a crash of another kind.
  const r = lcg(9)
  const junk = [null, 'x', -1, 0.5, 1e308, [], {}, true, [1, 2, 3], { i: 0 }]
  let refused = 0
  for (let round = 0; round < 500; round++) {
    const x = good() as unknown
    let node = x as Record<string, unknown>
    for (;;) {
      const keys = Object.keys(node)
      if (keys.length === 0) break
      const key = keys[Math.floor(r() * keys.length)]!
      const child = node[key]
      if (typeof child === 'object' && child !== null && r() < 0.7) {
        node = child as Record<string, unknown>
        continue
      }
      if (r() < 0.2) delete node[key]
      else node[key] = junk[Math.floor(r() * junk.length)]
      break
    }
    try {
      const back = SystemSeries.fromJSON(x)
      back.add({ t: Number.MAX_SAFE_INTEGER, cpuPct: 1 })
      back.points.forEach(() => undefined)
      back.totals()
    } catch (err) {
      refused++
      if (!(err instanceof Error) || !err.message.startsWith('not a saved system series: ')) {
        t.fail(`an unexpected error: ${String(err)}`)
        break
      }
    }
  }
  t.ok(refused > 250, `most of the corrupted copies are refused (${refused} of 500)`)
})

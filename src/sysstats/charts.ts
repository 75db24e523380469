import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { Logger } from 'pino'
import type { Clock } from '../util/clock.js'
import type { Disk } from '../util/disk.js'
import { withTimeout } from '../util/timeout.js'
import { systemFields } from './fields.js'
import { SystemSeries } from './series.js'
import type { GpuReader, UsageSource } from './sources.js'
import { renderSystemChart } from './svg.js'
import type { GpuReading } from './types.js'

/** The chart's name in the results folder, and so at FGLab. */
export const CHART_FILE = 'fgmachine-system.svg'

export interface SystemChartsOptions {
  /** Where each experiment's samples are kept between restarts (the experiments' state folder). */
  dir: string
  disk: Disk
  log: Logger
  clock: Clock
  /** The GPUs' readings; none on a machine without GPUs. */
  gpus?: GpuReader
  /** The sampling interval once the experiment has run a few seconds (ms). */
  sampleMs: number
  /** How often a long run's chart is sent while it runs (ms); 0: only at its end. */
  chartEveryMs: number
  /** How often the samples are written down, to survive a restart (ms, default a minute). */
  saveEveryMs?: number
  /** Points kept per experiment, whatever its length (default 600). */
  maxPoints?: number
  /** The host's CPUs: no reading is more than all of them busy (default os.availableParallelism()). */
  cpus?: number
}

/** The options, the host's CPUs known. */
type Options = SystemChartsOptions & { cpus: number }

/** What is watched: one experiment that runs. */
export interface WatchTarget {
  experimentId: string
  resultsDir: string
  /** Its CPU and memory. */
  source: UsageSource
  /** Host indices of its GPUs. */
  gpus: number[]
  /** When the program started (ms since the epoch): the first reading's CPU is its mean since then. */
  startedMs: number
  /** The container's memory limit, when it has one. */
  memoryLimitBytes?: number
  /** Shown on the chart, e.g. "project mnist · experiment 5f…". */
  title: string
}

/** What is written down of a watch: enough to draw its chart after a restart. */
interface Saved {
  title: string
  series: unknown
}

/**
 * System charts for every experiment, with nothing in its code: while it runs
 * its CPU and memory (Docker's stats, or its process tree) and its GPUs'
 * utilisation and memory (nvidia-smi) are sampled every few seconds into a
 * series of bounded size (long runs are downsampled), written down every
 * minute so a restart loses little. A long run's chart goes to FGLab now and
 * then as `fgmachine-system.svg` in its results folder (the results watch
 * sends it like any file); at the end the last chart, and its summary as
 * readable fields (peak memory, mean CPU, GPU utilisation and memory).
 * Nothing here fails an experiment or holds up its reports for long: what
 * goes wrong is logged, and the experiment goes on without its chart.
 */
export class SystemCharts {
  readonly #watches = new Map<string, Watch>()
  /** Each experiment's writes of its samples, one after another (they share a temporary file). */
  readonly #saves = new Map<string, Promise<void>>()

  private readonly opts: Options

  constructor(opts: SystemChartsOptions) {
    this.opts = { ...opts, cpus: opts.cpus ?? os.availableParallelism() }
  }

  /** Start sampling a running experiment, going on from what an earlier FGMachine sampled of it. */
  watch(target: WatchTarget): void {
    const id = target.experimentId
    const before = this.stop(id)
    const load = async () => {
      await before
      return (await this.#load(id))?.series
    }
    const w = new Watch(this.opts, target, load, (s) => this.#save(id, s))
    this.#watches.set(id, w)
    w.run()
  }

  /** Stop sampling (FGMachine shuts down, the experiment runs on) and write the samples down. */
  async stop(experimentId: string): Promise<void> {
    const w = this.#watches.get(experimentId)
    if (!w) return
    this.#watches.delete(experimentId)
    await w.stop()
    await this.#save(experimentId, w.saved()).catch((err: unknown) => this.#warn(experimentId, 'could not write the system samples down', err))
  }

  /**
   * The experiment has ended: its final chart into its results folder (before
   * the last sweep sends it) and its summary fields. Nothing when it was
   * never sampled (it ended within a second). Never throws.
   */
  async finish(experimentId: string, resultsDir: string): Promise<Record<string, string>> {
    let saved: { title: string; series: SystemSeries } | undefined
    const w = this.#watches.get(experimentId)
    this.#watches.delete(experimentId)
    try {
      // Sampled by this FGMachine: from memory. After a restart: as last written down.
      if (w) await w.stop()
      saved = w ? { title: w.target.title, series: w.series } : await this.#load(experimentId)
    } catch (err) {
      this.#warn(experimentId, 'could not read the system samples', err)
    }
    if (!saved || saved.series.totals().samples === 0) return {}
    // Written down too: a restart before the reports are queued makes the same chart and fields again.
    if (w) await this.#save(experimentId, w.saved()).catch((err: unknown) => this.#warn(experimentId, 'could not write the system samples down', err))
    await writeChart(resultsDir, saved).catch((err: unknown) => this.#warn(experimentId, 'could not write the system chart', err))
    return systemFields(saved.series.totals())
  }

  /** The experiment is done: its samples go. */
  async forget(experimentId: string): Promise<void> {
    await this.stop(experimentId)
    await (this.#saves.get(experimentId) ?? Promise.resolve())
    await this.opts.disk.remove(this.#file(experimentId)).catch((err: unknown) => this.#warn(experimentId, 'could not remove the system samples', err))
  }

  /** Remove the samples of every experiment but these (at start: those left by a crash once their experiment was done). */
  async sweep(keep: ReadonlySet<string>): Promise<void> {
    for (const name of await this.opts.disk.list(this.opts.dir).catch(() => [])) {
      const m = /^([0-9a-f]{24})\.system\.json$/.exec(name)
      if (!m || keep.has(m[1]!) || this.#watches.has(m[1]!)) continue
      await this.opts.disk.remove(path.join(this.opts.dir, name)).catch((err: unknown) => this.#warn(m[1]!, 'could not remove system samples left behind', err))
    }
  }

  /** Let every watch go (FGMachine shuts down; the samples are written down). */
  async close(): Promise<void> {
    await Promise.all([...this.#watches.keys()].map((id) => this.stop(id)))
  }

  #warn(experimentId: string, what: string, err: unknown): void {
    this.opts.log.warn({ experimentId, err: (err as Error).message }, what)
  }

  #file(experimentId: string): string {
    return path.join(this.opts.dir, `${experimentId}.system.json`)
  }

  async #load(experimentId: string): Promise<{ title: string; series: SystemSeries } | undefined> {
    const text = await this.opts.disk.read(this.#file(experimentId)).catch(() => undefined)
    if (!text) return undefined
    try {
      const s = JSON.parse(text) as Saved
      return { title: String(s.title ?? ''), series: SystemSeries.fromJSON(s.series) }
    } catch (err) {
      this.#warn(experimentId, 'unreadable system samples left out (the chart starts again from now)', err)
      return undefined
    }
  }

  #save(experimentId: string, saved: Saved): Promise<void> {
    const prev = this.#saves.get(experimentId) ?? Promise.resolve()
    const next = prev.catch(() => undefined).then(() => this.opts.disk.writeAtomic(this.#file(experimentId), JSON.stringify(saved)))
    const tail = next.catch(() => undefined)
    this.#saves.set(experimentId, tail)
    void tail.then(() => {
      if (this.#saves.get(experimentId) === tail) this.#saves.delete(experimentId)
    })
    return next
  }
}

/**
 * The chart into the results folder, unless it is already there as it is (a
 * restart must not send it again). The folder is the experiment's: a link
 * or anything but a regular file by that name is left alone (and said), never
 * followed or read.
 */
async function writeChart(resultsDir: string, s: { title: string; series: SystemSeries }): Promise<void> {
  const svg = Buffer.from(renderSystemChart(s.series, { title: s.title, subtitle: subtitle(s.series) }))
  const file = path.join(resultsDir, CHART_FILE)
  const fh = await open(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o644)
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new Error(`${file} is not a regular file: left as it is`)
    if (st.size === svg.length) {
      const old = Buffer.alloc(svg.length)
      const { bytesRead } = await fh.read(old, 0, old.length, 0)
      if (bytesRead === svg.length && old.equals(svg)) return
    }
    await fh.truncate(0)
    for (let at = 0; at < svg.length; ) at += (await fh.write(svg, at, svg.length - at, at)).bytesWritten
  } finally {
    await fh.close()
  }
}

function subtitle(series: SystemSeries): string {
  const t = series.totals()
  const gpus = t.gpus.map((g) => g.index)
  return `${t.samples} sample(s)${gpus.length ? `, GPU ${gpus.join(', ')}` : ''}; CPU in % of one core, memory without the page cache`
}

/** How long a stop waits for a reading under way (Docker or nvidia-smi slow to answer) before going on without it. */
const STOP_WAIT_MS = 2000

/** The sampling of one running experiment. */
class Watch {
  readonly #stopped = new AbortController()
  #done: Promise<void> = Promise.resolve()
  #last: { t: number; cpuNs: number }
  /** The samples: a fresh series until the saved one (if any) is read. */
  series: SystemSeries

  constructor(
    private readonly opts: Options,
    readonly target: WatchTarget,
    private readonly load: () => Promise<SystemSeries | undefined>,
    private readonly save: (s: Saved) => Promise<void>,
  ) {
    this.series = new SystemSeries({ maxPoints: opts.maxPoints })
    // The first reading's CPU is its mean since the start (a resumed watch: from its first reading on).
    this.#last = { t: target.startedMs, cpuNs: 0 }
  }

  run(): void {
    this.#done = this.#loop().catch((err: unknown) => {
      if (!this.#stopped.signal.aborted) this.opts.log.warn({ experimentId: this.target.experimentId, err: (err as Error).message }, 'system sampling stopped')
    })
  }

  /** Stop sampling; resolves when the reading under way (if any) is in, or given up after a moment. */
  async stop(): Promise<void> {
    this.#stopped.abort()
    await withTimeout(this.#done, STOP_WAIT_MS, 'a reading did not end').catch(() => undefined)
  }

  saved(): Saved {
    return { title: this.target.title, series: this.series.toJSON() }
  }

  async #loop(): Promise<void> {
    const { clock, sampleMs, chartEveryMs, log } = this.opts
    const id = this.target.experimentId
    const saveEveryMs = this.opts.saveEveryMs ?? 60_000
    const signal = this.#stopped.signal
    const earlier = await this.load()
    if (earlier && earlier.totals().samples > 0) {
      this.series = earlier
      this.#last = { t: Number.NaN, cpuNs: 0 }
    }
    // Soon after the start (1 s, 2 s, 4 s, …), then every sampleMs: short runs get a curve too.
    let delay = Math.min(1000, sampleMs)
    let nextSave = clock.now() + saveEveryMs
    let nextChart = chartEveryMs > 0 ? clock.now() + chartEveryMs : Infinity
    const failing = new Map<string, string>()
    /** Each trouble said once, until it passes. */
    const attempt = async (what: string, work: () => Promise<unknown>, level: 'debug' | 'warn') => {
      try {
        await work()
        failing.delete(what)
        return true
      } catch (err) {
        const reason = (err as Error).message
        if (failing.get(what) !== reason) log[level]({ experimentId: id, reason }, `cannot ${what}; trying again later`)
        failing.set(what, reason)
        return undefined
      }
    }
    for (;;) {
      await clock.sleep(delay, signal)
      delay = Math.min(sampleMs, delay * 2)
      let running = true
      await attempt("read the experiment's resource use", async () => (running = await this.#sample()), 'debug')
      if (!running || signal.aborted) return
      const now = clock.now()
      if (now >= nextSave) {
        nextSave = now + saveEveryMs
        await attempt('write the system samples down', () => this.save(this.saved()), 'warn')
      }
      if (now >= nextChart) {
        nextChart = now + chartEveryMs
        await attempt('write the system chart', () => writeChart(this.target.resultsDir, { title: this.target.title, series: this.series }), 'warn')
      }
    }
  }

  /** One reading into the series; false when the experiment no longer runs. */
  async #sample(): Promise<boolean> {
    const { gpus: reader, clock } = this.opts
    const [[usage, t], gpus] = await Promise.all([
      // Timed when it is read, not when the GPUs' answer (which may take longer) comes.
      this.target.source().then((u) => [u, clock.now()] as const),
      this.target.gpus.length && reader ? reader.read() : Promise.resolve(new Map<number, GpuReading>()),
    ])
    if (!usage || this.#stopped.signal.aborted) return false
    let cpuPct: number | undefined
    if (usage.cpuNs !== undefined) {
      const dt = t - this.#last.t
      // Never more than every CPU of the host busy: a process that left its group mid-way can make a step.
      const most = this.opts.cpus * 100
      if (dt > 0) cpuPct = Math.min(most, Math.max(0, ((usage.cpuNs - this.#last.cpuNs) / 1e6 / dt) * 100))
      this.#last = { t, cpuNs: usage.cpuNs }
    }
    const readings = this.target.gpus.map((index) => gpus.get(index)).filter((g): g is GpuReading => g !== undefined)
    this.series.add({
      t,
      cpuPct,
      memoryBytes: usage.memoryBytes,
      memoryLimitBytes: this.target.memoryLimitBytes,
      ...(readings.length && { gpus: readings }),
    })
    return true
  }
}

import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import type { Clock } from '../util/clock.js'
import type { Disk } from '../util/disk.js'
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
  /** How often a long run's chart is sent while it runs (ms). */
  chartEveryMs: number
  /** How often the samples are written down, to survive a restart (ms, default a minute). */
  saveEveryMs?: number
  /** Points kept per experiment, whatever its length (default 600). */
  maxPoints?: number
}

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
 */
export class SystemCharts {
  readonly #watches = new Map<string, Watch>()

  constructor(private readonly opts: SystemChartsOptions) {}

  /** Start sampling a running experiment, going on from what an earlier FGMachine sampled of it. */
  async watch(target: WatchTarget): Promise<void> {
    await this.stop(target.experimentId)
    const saved = await this.#load(target.experimentId)
    const w = new Watch(this.opts, target, saved?.series ?? new SystemSeries({ maxPoints: this.opts.maxPoints }), (s) => this.#save(target.experimentId, s))
    this.#watches.set(target.experimentId, w)
    w.run()
  }

  /** Stop sampling (the experiment ended, or FGMachine shuts down) and write the samples down. */
  async stop(experimentId: string): Promise<void> {
    const w = this.#watches.get(experimentId)
    if (!w) return
    this.#watches.delete(experimentId)
    await w.stop()
    await this.#save(experimentId, w.saved()).catch((err: unknown) =>
      this.opts.log.warn({ experimentId, err: (err as Error).message }, 'could not write the system samples down'),
    )
  }

  /**
   * The experiment has ended: its final chart into its results folder (before
   * the last sweep sends it) and its summary fields. Nothing when it was
   * never sampled (it ended within a second). Never throws: a chart is not
   * worth a report.
   */
  async finish(experimentId: string, resultsDir: string): Promise<Record<string, string>> {
    try {
      // Sampled by this FGMachine: from memory. After a restart: as last written down.
      const w = this.#watches.get(experimentId)
      this.#watches.delete(experimentId)
      await w?.stop()
      const saved = w ? { title: w.target.title, series: w.series } : await this.#load(experimentId)
      if (!saved || saved.series.totals().samples === 0) return {}
      // Written down too: a restart before the reports are queued makes the same chart and fields again.
      await Promise.all([writeChart(resultsDir, saved), w && this.#save(experimentId, w.saved())])
      return systemFields(saved.series.totals())
    } catch (err) {
      this.opts.log.warn({ experimentId, err: (err as Error).message }, 'could not make the system chart')
      return {}
    }
  }

  /** The experiment is done: its samples go. */
  async forget(experimentId: string): Promise<void> {
    await this.stop(experimentId)
    await this.opts.disk.remove(this.#file(experimentId))
  }

  /** Let every watch go (FGMachine shuts down; the samples are written down). */
  async close(): Promise<void> {
    await Promise.all([...this.#watches.keys()].map((id) => this.stop(id)))
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
      this.opts.log.warn({ experimentId, err: (err as Error).message }, 'unreadable system samples left out (the chart starts again from now)')
      return undefined
    }
  }

  async #save(experimentId: string, saved: Saved): Promise<void> {
    await this.opts.disk.writeAtomic(this.#file(experimentId), JSON.stringify(saved))
  }
}

/** The chart into the results folder, unless it is already there as it is (a restart must not send it again). */
async function writeChart(resultsDir: string, s: { title: string; series: SystemSeries }): Promise<void> {
  const svg = renderSystemChart(s.series, { title: s.title, subtitle: subtitle(s.series) })
  const file = path.join(resultsDir, CHART_FILE)
  if ((await readFile(file, 'utf8').catch(() => undefined)) === svg) return
  await writeFile(file, svg)
}

function subtitle(series: SystemSeries): string {
  const t = series.totals()
  const gpus = t.gpus.map((g) => g.index)
  return `${t.samples} sample(s)${gpus.length ? `, GPU ${gpus.join(', ')}` : ''}; CPU in % of one core, memory without the page cache`
}

/** The sampling of one running experiment. */
class Watch {
  readonly #stopped = new AbortController()
  #done: Promise<void> = Promise.resolve()
  #last: { t: number; cpuNs: number }

  constructor(
    private readonly opts: SystemChartsOptions,
    readonly target: WatchTarget,
    readonly series: SystemSeries,
    private readonly save: (s: Saved) => Promise<void>,
  ) {
    // The first reading's CPU is its mean since the start (a resumed watch: since the last reading).
    this.#last = { t: target.startedMs, cpuNs: 0 }
    if (series.totals().samples > 0) this.#last = { t: Number.NaN, cpuNs: 0 }
  }

  run(): void {
    this.#done = this.#loop().catch((err: unknown) => {
      if (!this.#stopped.signal.aborted) this.opts.log.warn({ experimentId: this.target.experimentId, err: (err as Error).message }, 'system sampling stopped')
    })
  }

  /** Stop sampling; resolves when the reading under way (if any) is in. */
  async stop(): Promise<void> {
    this.#stopped.abort()
    await this.#done
  }

  saved(): Saved {
    return { title: this.target.title, series: this.series.toJSON() }
  }

  async #loop(): Promise<void> {
    const { clock, sampleMs, chartEveryMs } = this.opts
    const saveEveryMs = this.opts.saveEveryMs ?? 60_000
    const signal = this.#stopped.signal
    // Soon after the start (1 s, 2 s, 4 s, …), then every sampleMs: short runs get a curve too.
    let delay = Math.min(1000, sampleMs)
    let nextSave = clock.now() + saveEveryMs
    let nextChart = clock.now() + chartEveryMs
    let failing: string | undefined
    for (;;) {
      await clock.sleep(delay, signal)
      delay = Math.min(sampleMs, delay * 2)
      try {
        if (!(await this.#sample())) return // it no longer runs
        failing = undefined
      } catch (err) {
        const reason = (err as Error).message
        if (failing !== reason) this.opts.log.debug({ experimentId: this.target.experimentId, reason }, 'cannot read the experiment\'s resource use; trying again')
        failing = reason
      }
      if (signal.aborted) return
      const now = clock.now()
      if (now >= nextChart) {
        nextChart = now + chartEveryMs
        nextSave = now + saveEveryMs
        await this.save(this.saved())
        await writeChart(this.target.resultsDir, { title: this.target.title, series: this.series })
      } else if (now >= nextSave) {
        nextSave = now + saveEveryMs
        await this.save(this.saved())
      }
    }
  }

  /** One reading into the series; false when the experiment no longer runs. */
  async #sample(): Promise<boolean> {
    const { gpus: reader } = this.opts
    const [usage, gpus] = await Promise.all([
      this.target.source(),
      this.target.gpus.length && reader ? reader.read() : Promise.resolve(new Map<number, GpuReading>()),
    ])
    if (!usage || this.#stopped.signal.aborted) return false
    const t = this.opts.clock.now()
    let cpuPct: number | undefined
    if (usage.cpuNs !== undefined) {
      const dt = t - this.#last.t
      if (dt > 0) cpuPct = Math.max(0, ((usage.cpuNs - this.#last.cpuNs) / 1e6 / dt) * 100)
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

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { FglabError, type FglabCall } from './fglab/client.js'
import type { ExitInfo } from './runner/runtime.js'
import { succeeded } from './runner/summary.js'
import type { Scheduler } from './scheduler/scheduler.js'
import { UNIT } from './scheduler/units.js'

/** Every metric's name starts with this (process metrics included). */
export const METRIC_PREFIX = 'fgmachine_'

/** Why an experiment ended `fail` (or `none` for a success), as `fgmachine_experiments_ended_total` labels it. */
export type EndReason = 'none' | 'killed' | 'timeout' | 'oom' | 'error' | 'exit_code'

/** How an ended experiment is counted: the same rule as its FGLab status (run.ts), then the first cause that applies. */
export function endLabels(exit: ExitInfo, killed: boolean): { status: 'success' | 'fail'; reason: EndReason } {
  if (succeeded(exit, killed)) return { status: 'success', reason: 'none' }
  const reason: EndReason = killed ? 'killed' : exit.timedOut ? 'timeout' : exit.oomKilled ? 'oom' : exit.error !== undefined ? 'error' : 'exit_code'
  return { status: 'fail', reason }
}

/** `unreachable` (no answer), `http_4xx`, `http_5xx`, or `other` (a failure of FGMachine's side: a file that could not be read). */
export function fglabErrorKind(err: unknown): 'unreachable' | 'http_4xx' | 'http_5xx' | 'other' {
  if (!(err instanceof FglabError)) return 'other'
  if (err.status === undefined) return 'unreachable'
  return err.status >= 500 ? 'http_5xx' : err.status >= 400 ? 'http_4xx' : 'other'
}

/** What is read at scrape time rather than kept up to date everywhere. */
export interface MetricSources {
  /** Its usage has every GPU the machine hands out (one series each, 0 when nothing is allocated). */
  scheduler?: Pick<Scheduler, 'usage'>
  outbox?: { pending(): number; bytes(): number }
}

export interface MetricsOptions {
  /** prom-client's process metrics (RSS, CPU, event loop lag, …) on the same registry; default true. */
  processMetrics?: boolean
}

/** Seconds buckets for things that take from a fraction of a second to a minute or so. */
const START_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120]

/**
 * FGMachine's metrics, on a registry of its own (never prom-client's global
 * one): each defined here, once, with its help text. `GET /metrics` answers
 * `registry.metrics()` (src/api/metrics-routes.ts).
 */
export class Metrics {
  readonly registry: Registry
  readonly experimentsStarted: Counter
  readonly experimentsEnded: Counter<'status' | 'reason'>
  readonly experimentsRunning: Gauge
  readonly experimentDuration: Histogram
  readonly containerStart: Histogram
  readonly submitToRunning: Histogram
  readonly imagePulls: Counter<'result'>
  readonly imagePull: Histogram
  readonly imagePullBytes: Counter
  readonly reportsGivenUp: Counter
  readonly fglabRequestErrors: Counter<'kind' | 'call'>
  readonly fglabRequest: Histogram<'call'>
  readonly reportLatency: Histogram
  readonly dockerRequest: Histogram<'op'>
  readonly dockerRequestErrors: Counter<'op'>
  #sources: MetricSources = {}

  constructor(opts: MetricsOptions = {}) {
    const registers = [(this.registry = new Registry())]
    const p = METRIC_PREFIX
    this.experimentsStarted = new Counter({ name: `${p}experiments_started_total`, help: 'Experiments whose program started (container or process)', registers })
    this.experimentsEnded = new Counter({
      name: `${p}experiments_ended_total`,
      help: 'Experiments that ended, by FGLab status (success|fail) and why a failed one failed (killed|timeout|oom|error|exit_code; none for a success)',
      labelNames: ['status', 'reason'],
      registers,
    })
    this.experimentsRunning = new Gauge({ name: `${p}experiments_running`, help: 'Experiments whose program runs now', registers })
    this.experimentDuration = new Histogram({
      name: `${p}experiment_duration_seconds`,
      help: 'How long an experiment ran, from its start to its end',
      buckets: [1, 10, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 72 * 3600],
      registers,
    })
    this.containerStart = new Histogram({
      name: `${p}container_start_seconds`,
      help: "Making, attaching to and starting an experiment's container, its image being there",
      buckets: START_BUCKETS,
      registers,
    })
    this.submitToRunning = new Histogram({
      name: `${p}submit_to_running_seconds`,
      help: 'From a start accepted to its program running (image pull included)',
      buckets: START_BUCKETS,
      registers,
    })
    this.imagePulls = new Counter({ name: `${p}image_pulls_total`, help: 'Image pulls, by result (success|fail)', labelNames: ['result'], registers })
    this.imagePull = new Histogram({
      name: `${p}image_pull_seconds`,
      help: 'How long an image pull took (one per pull, however many starts share it)',
      buckets: [1, 5, 10, 30, 60, 120, 300, 600, 1800],
      registers,
    })
    this.imagePullBytes = new Counter({ name: `${p}image_pull_bytes_total`, help: 'Bytes image pulls downloaded (layers already here not counted)', registers })
    this.reportsGivenUp = new Counter({ name: `${p}reports_given_up_total`, help: 'Reports to FGLab given up (FGLab refuses them)', registers })
    this.fglabRequestErrors = new Counter({
      name: `${p}fglab_request_errors_total`,
      help: 'Failed requests to FGLab (registration and reports), by kind (unreachable|http_4xx|http_5xx|other) and call',
      labelNames: ['kind', 'call'],
      registers,
    })
    this.fglabRequest = new Histogram({
      name: `${p}fglab_request_seconds`,
      help: 'How long FGLab took to answer a request (or to fail it), by call (register|update_machine|projects|started|update|files|finished|exists)',
      labelNames: ['call'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    this.reportLatency = new Histogram({
      name: `${p}report_seconds`,
      help: "From an experiment's end to FGLab having all its reports (its last results, status and finished)",
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600],
      registers,
    })
    this.dockerRequest = new Histogram({
      name: `${p}docker_request_seconds`,
      help: 'How long the Docker engine took to answer, by operation (create|start|stop|remove|inspect|list|stats|ping|info)',
      labelNames: ['op'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    this.dockerRequestErrors = new Counter({
      name: `${p}docker_request_errors_total`,
      help: 'Docker engine requests that failed (the engine refused or could not be reached), by operation',
      labelNames: ['op'],
      registers,
    })
    const sources = () => this.#sources
    new Gauge({
      name: `${p}capacity_used_ratio`,
      help: "The machine's capacity held by experiments (0..1)",
      registers,
      collect() {
        const s = sources().scheduler
        if (s) this.set(s.usage().cpuUnits / UNIT)
      },
    })
    new Gauge({
      name: `${p}capacity_free_ratio`,
      help: "The machine's capacity free for experiments (0..1)",
      registers,
      collect() {
        const s = sources().scheduler
        if (s) this.set(Math.max(0, UNIT - s.usage().cpuUnits) / UNIT)
      },
    })
    new Gauge({
      name: `${p}gpu_allocated_ratio`,
      help: 'Each GPU allocated to experiments (0..1), by index',
      labelNames: ['gpu'],
      registers,
      collect() {
        const { scheduler } = sources()
        if (!scheduler) return
        for (const [g, used] of scheduler.usage().gpus) this.set({ gpu: String(g) }, used / UNIT)
      },
    })
    new Gauge({
      name: `${p}outbox_entries`,
      help: 'Reports waiting in the outbox to reach FGLab',
      registers,
      collect() {
        const o = sources().outbox
        if (o) this.set(o.pending())
      },
    })
    new Gauge({
      name: `${p}outbox_bytes`,
      help: 'Bytes the outbox holds on disk',
      registers,
      collect() {
        const o = sources().outbox
        if (o) this.set(o.bytes())
      },
    })
    // Every series there can be, from 0: a rate over the first failure is not lost.
    this.experimentsEnded.inc({ status: 'success', reason: 'none' }, 0)
    for (const reason of ['killed', 'timeout', 'oom', 'error', 'exit_code'] as const) this.experimentsEnded.inc({ status: 'fail', reason }, 0)
    for (const result of ['success', 'fail']) this.imagePulls.inc({ result }, 0)
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: p })
  }

  /** Where the scrape-time gauges read from (machine.ts, once the services exist). */
  observe(sources: MetricSources): void {
    this.#sources = { ...this.#sources, ...sources }
  }

  /** An experiment ended: counted by how, and its run time when it is known. */
  ended(exit: ExitInfo, killed: boolean, launchedMs?: number): void {
    this.experimentsEnded.inc(endLabels(exit, killed))
    if (launchedMs !== undefined && exit.endedMs !== undefined) this.experimentDuration.observe(Math.max(0, exit.endedMs - launchedMs) / 1000)
  }

  /** An image pull ended (image-puller.ts). */
  pulled(ok: boolean, seconds: number, bytes = 0): void {
    this.imagePulls.inc({ result: ok ? 'success' : 'fail' })
    this.imagePull.observe(seconds)
    if (bytes > 0) this.imagePullBytes.inc(bytes)
  }

  /** A request to FGLab was answered, or failed (client.ts `onRequest`). */
  fglabRequested(call: FglabCall, seconds: number, err?: unknown): void {
    this.fglabRequest.observe({ call }, seconds)
    if (err !== undefined) this.fglabRequestErrors.inc({ kind: fglabErrorKind(err), call })
  }

  /** A Docker engine request ended (docker/timed-client.ts). */
  dockerRequested(op: string, seconds: number, ok: boolean): void {
    this.dockerRequest.observe({ op }, seconds)
    if (!ok) this.dockerRequestErrors.inc({ op })
  }
}

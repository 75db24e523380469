import path from 'node:path'
import type { Logger } from 'pino'
import { DurableQueue } from '../queue/durable-queue.js'
import type { Ledgers } from '../results/ledger.js'
import { sendResultFile, type ResultFileContext } from '../results/result-file.js'
import type { Disk } from '../util/disk.js'
import { isObjectId } from '../util/ids.js'
import type { FglabClient } from './client.js'
import type { Delivery } from './delivery.js'

/** One report to FGLab about one experiment. Plain data, kept on disk until it has ended. */
export type Report =
  | { kind: 'started' }
  /** A results file, read when it is sent: one rewritten before its turn goes out in its latest form. */
  | { kind: 'file'; path: string }
  /** How the program ended (`FGMachine`), with what became of its results files (`FGMachine_results`), when it is sent. */
  | { kind: 'summary'; summary: Record<string, unknown> }
  | { kind: 'status'; status: 'success' | 'fail' }
  | { kind: 'finished' }

/** A report's name in the ledger (and for coalescing: one of each waiting is enough). */
export function reportName(r: Report): string {
  return r.kind === 'file' ? `file:${path.basename(r.path)}` : r.kind
}

export interface OutboxOptions {
  dir: string
  disk: Disk
  client: FglabClient
  delivery: Delivery
  ledgers: Ledgers
  log: Logger
  /** Past this many bytes of queued reports, no new experiments are taken (FGMACHINE_OUTBOX_MAX_MB). */
  maxBytes: number
  maxFileBytes: number
}

/**
 * The reports to FGLab: a durable queue, in order per experiment, whose
 * every report ends (Delivery says how) and whose outcome goes into the
 * experiment's ledger before the report counts as done. A report the ledger
 * already settled (before a restart) is not sent again, and once FGLab has
 * lost the experiment (deleted there), nothing more is sent for it.
 */
export class Outbox {
  readonly #queue: DurableQueue<Report>
  readonly #files: ResultFileContext

  constructor(private readonly opts: OutboxOptions) {
    this.#files = { client: opts.client, log: opts.log, maxFileBytes: opts.maxFileBytes }
    this.#queue = new DurableQueue<Report>({
      dir: opts.dir,
      disk: opts.disk,
      log: opts.log,
      maxBytes: opts.maxBytes,
      validKey: isObjectId,
      process: (id, report, signal) => this.#process(id, report, signal),
    })
  }

  /** Queue a report (O(1); it reaches the disk in the background). False when the same one already waits. */
  report(experimentId: string, report: Report): boolean {
    return this.#queue.enqueue(experimentId, report, reportName(report))
  }

  /** Send what was queued before a restart; returns the experiments it is for. */
  async restore(): Promise<string[]> {
    const ids = await this.#queue.restore()
    if (ids.length) this.opts.log.info({ experiments: ids.length, reports: this.#queue.pending() }, 'resending reports left from before the restart')
    return ids
  }

  /** Resolves true once every report queued so far for the experiment has ended, false if the outbox closed first. */
  drain(experimentId: string): Promise<boolean> {
    return this.#queue.drain(experimentId)
  }

  pending(experimentId?: string): number {
    return this.#queue.pending(experimentId)
  }

  bytes(): number {
    return this.#queue.bytes()
  }

  /** Too much waits for FGLab: take no new experiments until it has taken some. */
  full(): boolean {
    return this.#queue.full()
  }

  /** Stop sending (shutdown): what is unsent stays on disk for the next start. */
  close(): void {
    this.#queue.close()
  }

  async #process(id: string, report: Report, signal: AbortSignal): Promise<void> {
    const ledger = await this.opts.ledgers.open(id)
    const name = reportName(report)
    if (ledger.deleted || (report.kind !== 'file' && ledger.has(name))) return
    const result = await this.opts.delivery.deliver(
      id,
      name,
      async () => {
        switch (report.kind) {
          case 'started':
            await this.opts.client.experimentStarted(id)
            return { sent: true }
          case 'finished':
            await this.opts.client.experimentFinished(id)
            return { sent: true }
          case 'summary': {
            // Every results file queued before it has ended by now: the list is complete.
            const problems = ledger.problems()
            await this.opts.client.updateExperiment(id, { ...report.summary, ...(problems && { FGMachine_results: problems }) })
            return { sent: true }
          }
          case 'status':
            await this.opts.client.updateExperiment(id, { _status: report.status })
            return { sent: true }
          case 'file':
            return sendResultFile(this.#files, id, report.path, (sig) => ledger.sentSignature(path.basename(report.path)) === sig)
        }
      },
      signal,
    )
    if (result === undefined) return
    if ('deleted' in result) {
      const why = 'the experiment was deleted in FGLab'
      await ledger.markDeleted(why)
      this.opts.log.error({ experimentId: id }, 'FGLab no longer has this experiment (deleted there): nothing more is sent for it, and its results folder is kept')
      return
    }
    await ledger.record(name, result)
  }
}

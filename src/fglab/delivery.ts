import type { Logger } from 'pino'
import type { Outcome } from '../results/ledger.js'
import { backoffDelay, realSleep, type Backoff, type Sleep } from '../util/retry.js'
import type { Metrics } from '../metrics.js'
import { FglabError, type FglabClient } from './client.js'

export interface DeliveryOptions {
  backoff?: Backoff
  sleep?: Sleep
  now?: () => number
  /** Counts reports given up (src/metrics.ts); failed requests are counted by the client. */
  metrics?: Pick<Metrics, 'reportsGivenUp'>
}

/**
 * A failure is FGLab refusing this report, not an outage, once it came the
 * same way this many times in a row, over at least this long, while FGLab
 * still answered for the experiment itself (README, "Reliability").
 */
const REFUSED_AFTER = 4
const REFUSED_SPAN_MS = 10_000

/** How a report ended: as the ledger records it, the experiment is gone from FGLab, or (undefined) nothing was to be sent. */
export type Delivered = Outcome | { deleted: true } | undefined

/** The FGLab answers that say "this will never succeed": refused at once. */
const refusedAtOnce = (err: unknown) => err instanceof FglabError && !err.retryable

/**
 * What makes two failures "the same" when they may be this report's own: a 5xx
 * with its answer, or a connection that failed the same way (a proxy that cuts
 * off an upload it will not take, an FGLab that falls over on it). Undefined
 * for failures that only pass: wrong credentials, 408/425/429, a file that
 * could not be opened now.
 */
function sameFailure(err: unknown): string | undefined {
  if (!(err instanceof FglabError)) return undefined
  if (err.status === undefined) return err.message
  return err.status >= 500 ? `FGLab answered ${err.status} ${err.answer}`.trim() : undefined
}

/**
 * Sends one report until it ends: sent, or given up once it clearly never
 * will be (docs/PROTOCOL.md, "What the real FGLab answers"):
 * - a 4xx other than the passing and credential ones: at once;
 * - the same 5xx (or the same failed connection) for the same report
 *   REFUSED_AFTER times over REFUSED_SPAN_MS, while FGLab itself works (it
 *   answers for the experiment): MongoDB refuses the update (a document grown
 *   past 16 MiB), a proxy cuts off an upload it will not take;
 * - FGLab answers for the experiment with nothing: it was deleted there.
 * Everything else (FGLab unreachable, 5xx while FGLab cannot answer for the
 * experiment either, wrong credentials) is an outage: retried with backoff
 * until it passes, as long as it takes.
 */
export class Delivery {
  readonly #backoff: Backoff
  readonly #sleep: Sleep
  readonly #now: () => number
  readonly #metrics: DeliveryOptions['metrics']

  constructor(
    private readonly client: FglabClient,
    private readonly log: Logger,
    opts: DeliveryOptions = {},
  ) {
    this.#backoff = opts.backoff ?? { baseMs: 500, maxMs: 30_000 }
    this.#sleep = opts.sleep ?? realSleep
    this.#now = opts.now ?? Date.now
    this.#metrics = opts.metrics
  }

  /**
   * Try `attempt` until it settles the report. It resolves with an outcome
   * (also one decided without FGLab: a file that is gone, too big), or throws
   * FGLab's error. Rejects only when `signal` aborts.
   */
  async deliver(experimentId: string, what: string, attempt: () => Promise<Outcome | undefined>, signal: AbortSignal): Promise<Delivered> {
    let last = ''
    let same = 0
    let since = 0
    for (let n = 0; ; n++) {
      signal.throwIfAborted()
      let err: unknown
      try {
        return await attempt()
      } catch (e) {
        err = e
      }
      signal.throwIfAborted()
      const message = (err as Error).message
      if (refusedAtOnce(err)) {
        this.log.error({ experimentId, report: what, err: message }, 'FGLab refused a report; it is given up')
        this.#metrics?.reportsGivenUp.inc()
        return { sent: false, reason: `FGLab refused it (${message})` }
      }
      const failure = sameFailure(err)
      if (failure !== undefined) {
        if (failure === last) same++
        else [last, same, since] = [failure, 1, this.#now()]
        if (same >= REFUSED_AFTER - 1) {
          const verdict = await this.#probe(experimentId)
          if (verdict === 'deleted') return { deleted: true }
          if (verdict === 'outage') same = 0
          else if (same >= REFUSED_AFTER && this.#now() - since >= REFUSED_SPAN_MS) {
            const reason = `${failure} ${same} times in ${Math.round((this.#now() - since) / 1000)} s, while it answers for the experiment`
            this.log.error({ experimentId, report: what, err: message, tries: same }, 'FGLab keeps refusing a report; it is given up')
            this.#metrics?.reportsGivenUp.inc()
            return { sent: false, reason }
          }
        }
      } else {
        same = 0
        last = ''
      }
      const wait = backoffDelay(n, this.#backoff)
      this.log.warn({ experimentId, report: what, attempt: n + 1, retryInMs: wait, err: message }, 'report to FGLab failed; will retry')
      await this.#sleep(wait, signal)
    }
  }

  /** Does FGLab answer for this experiment? Then its database works; an empty answer: it was deleted there. */
  async #probe(experimentId: string): Promise<'exists' | 'deleted' | 'outage'> {
    try {
      return (await this.client.experimentExists(experimentId)) ? 'exists' : 'deleted'
    } catch {
      return 'outage'
    }
  }
}

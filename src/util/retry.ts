import { setTimeout as delay } from 'node:timers/promises'

export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>

export const realSleep: Sleep = (ms, signal) => delay(ms, undefined, signal ? { signal } : undefined)

export interface Backoff {
  baseMs: number
  maxMs: number
  /** Returns a number in [0, 1); injected so tests are deterministic. */
  random?: () => number
}

/** Exponential backoff with full jitter: a wait in [d/2, d) where d doubles each attempt up to maxMs. */
export function backoffDelay(attempt: number, b: Backoff): number {
  const d = Math.min(b.maxMs, b.baseMs * 2 ** Math.min(attempt, 30))
  const r = (b.random ?? Math.random)()
  return Math.round(d / 2 + (d / 2) * r)
}

export interface RetryOptions extends Backoff {
  sleep?: Sleep
  signal?: AbortSignal
  /** Whether this error is worth another try; false ends the retries with it. */
  retryable: (err: unknown) => boolean
  onRetry?: (err: unknown, attempt: number, waitMs: number) => void
  /** Give up after this many attempts (default: never). */
  maxAttempts?: number
}

/** Run `fn` until it succeeds, the error is not retryable, attempts run out, or `signal` aborts. */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const sleep = opts.sleep ?? realSleep
  for (let attempt = 0; ; attempt++) {
    opts.signal?.throwIfAborted()
    try {
      return await fn(attempt)
    } catch (err) {
      if (!opts.retryable(err) || attempt + 1 >= (opts.maxAttempts ?? Infinity)) throw err
      const wait = backoffDelay(attempt, opts)
      opts.onRetry?.(err, attempt + 1, wait)
      await sleep(wait, opts.signal)
    }
  }
}

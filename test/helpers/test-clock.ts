import type { Clock } from '../../src/util/clock.js'

interface Timer {
  at: number
  resolve: () => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

/**
 * Time for unit tests. Every sleep asked for is recorded (`sleeps`). With
 * `auto` (the default) sleeps end by themselves, one at a time in the order of
 * their ends, each moving `now()` to its end: years of waiting take
 * milliseconds. Without it, time stands until `advance(ms)`.
 */
export class TestClock implements Clock {
  t = Date.UTC(2026, 11, 1)
  auto: boolean
  readonly sleeps: number[] = []
  #timers: Timer[] = []
  #ticking = false

  constructor(opts: { auto?: boolean } = {}) {
    this.auto = opts.auto ?? true
  }

  now = (): number => this.t

  sleep = (ms: number, signal?: AbortSignal): Promise<void> => {
    this.sleeps.push(ms)
    if (signal?.aborted) return Promise.reject(signal.reason)
    return new Promise<void>((resolve, reject) => {
      const timer: Timer = { at: this.t + ms, resolve, reject, signal }
      if (signal) {
        timer.onAbort = () => {
          this.#timers = this.#timers.filter((x) => x !== timer)
          reject(signal.reason)
        }
        signal.addEventListener('abort', timer.onAbort, { once: true })
      }
      this.#timers.push(timer)
      this.#timers.sort((a, b) => a.at - b.at)
      if (this.auto) this.#tick()
    })
  }

  /** Move time on by `ms`, ending every sleep due by then, in order. */
  advance(ms: number): void {
    const until = this.t + ms
    while (this.#timers.length > 0 && this.#timers[0]!.at <= until) this.#fire(this.#timers.shift()!)
    this.t = until
  }

  /** Sleeps not yet ended. */
  get pending(): number {
    return this.#timers.length
  }

  #fire(timer: Timer): void {
    this.t = Math.max(this.t, timer.at)
    if (timer.onAbort) timer.signal?.removeEventListener('abort', timer.onAbort)
    timer.resolve()
  }

  #tick(): void {
    if (this.#ticking) return
    this.#ticking = true
    setImmediate(() => {
      this.#ticking = false
      const next = this.#timers.shift()
      if (next) this.#fire(next)
      if (this.auto && this.#timers.length > 0) this.#tick()
    })
  }
}

import type { Logger } from 'pino'
import type { RunRecord } from './journal.js'
import type { RunContext } from './run-context.js'
import type { ExitInfo, RunHandle } from './runtime.js'

/** The longest a single sleep waits (setTimeout's limit is about 24.8 days): longer waits are taken in steps. */
const MAX_SLEEP_MS = 2 ** 31 - 1
/** After a timed-out experiment's stop failed, the next try comes this long after its grace period. */
const STOP_RETRY_MS = 5_000

/** What supervise needs of a run. */
export interface Supervised {
  readonly handle?: RunHandle
  readonly record: Readonly<RunRecord>
  readonly state: string
  stop(graceMs: number): void
}

/**
 * Wait for a launched program's end, enforcing its project's timeout (from
 * its launch, so a restart does not give it more time), or let go of it when
 * FGMachine shuts down ('detached': a container runs on; a local process is
 * stopped by the manager and ends here).
 */
export async function supervise(run: Supervised, ctx: RunContext, log: Logger, publish: (text: string) => void): Promise<ExitInfo | 'detached'> {
  const handle = run.handle!
  const ended = new AbortController()
  let timedOut = false
  const limitS = run.record.timeoutS
  if (limitS !== undefined) {
    const deadline = (run.record.launchedMs ?? ctx.clock.now()) + limitS * 1000
    void (async () => {
      while (ctx.clock.now() < deadline) await ctx.clock.sleep(Math.min(MAX_SLEEP_MS, deadline - ctx.clock.now()), ended.signal)
      timedOut = true
      log.warn({ timeoutS: limitS }, 'experiment timed out: stopping it')
      publish(`[fgmachine] timed out after ${limitS} s: stopping\n`)
      // A stop that fails (Docker unreachable) leaves it running: tried again until it ends.
      for (;;) {
        if (run.state === 'running') run.stop(ctx.killGraceMs)
        await ctx.clock.sleep(ctx.killGraceMs + STOP_RETRY_MS, ended.signal)
      }
    })().catch(() => undefined)
  }
  let onShutdown: (() => void) | undefined
  const detached = new Promise<'detached'>((resolve) => {
    if (run.record.runtime !== 'docker') return
    onShutdown = () => resolve('detached')
    if (ctx.shutdown.aborted) onShutdown()
    else ctx.shutdown.addEventListener('abort', onShutdown, { once: true })
  })
  try {
    const exit = await Promise.race([handle.exited, detached])
    if (exit !== 'detached' && timedOut) return { ...exit, timedOut: true, error: `timed out after ${limitS} s` }
    return exit
  } finally {
    ended.abort()
    if (onShutdown) ctx.shutdown.removeEventListener('abort', onShutdown)
  }
}

import type Docker from 'dockerode'
import { realClock, type Clock } from '../util/clock.js'
import { DockerError } from './container-client.js'
import { PullTracker, type PullEvent, type PullProgress } from './pull-progress.js'
import type { RegistryAuth } from './registry-auth.js'

/** A DockerError for `what`, with the engine's own message and status when it answered. */
export function dockerError(what: string, err: unknown): DockerError {
  const e = err as { statusCode?: number; json?: { message?: string }; reason?: string; message?: string }
  const msg = e.json?.message ?? e.message ?? String(err)
  return new DockerError(`${what}: ${msg.trim()}`, e.statusCode, { cause: err })
}

export interface PullOptions {
  /** A pull that shows no progress for this long is cancelled. */
  stallMs: number
  /** Sent to the registry through Docker (X-Registry-Auth). */
  auth?: RegistryAuth
  /** Told of the pull's progress at its start, every `progressIntervalMs` (default 5 s) and at its end. */
  onProgress: (p: PullProgress) => void
  progressIntervalMs?: number
  clock?: Clock
}

/**
 * Pull `image`, telling `onProgress` where it stands, summed over its layers.
 * Fails with Docker's own reason when the pull fails, also when Docker says so
 * inside its progress stream (no space left, a registry's rate limit: the HTTP
 * answer was 200); and cancels a pull that shows no progress for `stallMs` (a
 * registry that accepts and never answers).
 */
export async function pullImage(docker: Docker, image: string, opts: PullOptions): Promise<void> {
  const { stallMs } = opts
  const clock = opts.clock ?? realClock
  const stallS = Math.round(stallMs / 1000)
  const stalled = () => new DockerError(`cannot pull image ${image}: the pull made no progress for ${stallS} s; cancelled`)
  const tracker = new PullTracker(image, clock.now())
  const tell = (done = false) => {
    try {
      opts.onProgress(tracker.summary(clock.now(), done))
    } catch {
      // a listener's trouble is not the pull's
    }
  }
  let stream: NodeJS.ReadableStream | undefined
  let timer: NodeJS.Timeout | undefined
  let fail: (err: Error) => void = () => {}
  const watchdog = new Promise<never>((_, reject) => (fail = reject))
  watchdog.catch(() => undefined)
  // Abort the request to Docker even before it answered, so no connection is left waiting
  // (Docker 20.10 still keeps its own to a silent registry until its own time-out).
  const cancel = new AbortController()
  const arm = () => {
    clearTimeout(timer)
    timer = setTimeout(() => {
      cancel.abort()
      ;(stream as unknown as { destroy?: () => void } | undefined)?.destroy?.()
      fail(stalled())
    }, stallMs)
  }
  // Progress every few seconds, also while nothing moves (a slow registry shows as such).
  const ticking = new AbortController()
  const tick = async () => {
    for (;;) {
      await clock.sleep(opts.progressIntervalMs ?? 5000, ticking.signal)
      tell()
    }
  }
  arm()
  tell()
  void tick().catch(() => undefined)
  try {
    const opened = docker.pull(image, { abortSignal: cancel.signal, ...(opts.auth ? { authconfig: opts.auth } : {}) }).then(
      (s: NodeJS.ReadableStream) => s,
      (err: unknown) => {
        throw dockerError(`cannot pull image ${image}`, err)
      },
    )
    stream = await Promise.race([opened, watchdog])
    const s = stream
    let failed: string | undefined
    await Promise.race([
      watchdog,
      new Promise<void>((resolve, reject) => {
        docker.modem.followProgress(
          s,
          (err: Error | null) => {
            if (err) reject(dockerError(`cannot pull image ${image}`, err))
            else if (failed !== undefined) reject(new DockerError(`cannot pull image ${image}: ${failed}`))
            else resolve()
          },
          (event: PullEvent) => {
            arm()
            if (event.error !== undefined || event.errorDetail?.message !== undefined) {
              failed ??= (event.errorDetail?.message ?? event.error ?? '').trim() || 'Docker reported an error'
              return
            }
            tracker.add(event)
          },
        )
      }),
    ])
    tell(true)
  } finally {
    clearTimeout(timer)
    ticking.abort()
  }
}

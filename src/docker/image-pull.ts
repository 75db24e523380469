import type Docker from 'dockerode'
import { DockerError, type PullProgress } from './container-client.js'

/** A DockerError for `what`, with the engine's own message and status when it answered. */
export function dockerError(what: string, err: unknown): DockerError {
  const e = err as { statusCode?: number; json?: { message?: string }; reason?: string; message?: string }
  const msg = e.json?.message ?? e.message ?? String(err)
  return new DockerError(`${what}: ${msg.trim()}`, e.statusCode, { cause: err })
}

interface PullEvent {
  status?: string
  id?: string
  progress?: string
  error?: string
  errorDetail?: { message?: string }
}

/**
 * Pull `image`, telling `onProgress` of each step. Fails with Docker's own
 * reason when the pull fails, also when Docker says so inside its progress
 * stream (no space left, a registry's rate limit: the HTTP answer was 200);
 * and cancels a pull that shows no progress for `stallMs` (a registry that
 * accepts and never answers).
 */
export async function pullImage(docker: Docker, image: string, stallMs: number, onProgress: (p: PullProgress) => void): Promise<void> {
  const stallS = Math.round(stallMs / 1000)
  const stalled = () => new DockerError(`cannot pull image ${image}: the pull made no progress for ${stallS} s; cancelled`)
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
  arm()
  try {
    const opened = docker.pull(image, { abortSignal: cancel.signal }).then(
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
            onProgress({ status: event.status ?? '', id: event.id, progress: event.progress })
          },
        )
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

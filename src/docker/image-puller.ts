import type Docker from 'dockerode'
import { realClock, type Clock } from '../util/clock.js'
import { DockerError, type EnsureImageOptions, type ImageStatus, type PullPolicy, type PullProgress } from './container-client.js'
import { dockerError, pullImage } from './image-pull.js'
import { isAuthFailure, loginAdvice, resolveRegistryAuth, type AuthOptions, type ResolvedAuth } from './registry-auth.js'

export interface ImagePullerOptions {
  /** A pull that shows no progress for this long is cancelled (ms). */
  pullStallMs: number
  /** How often a pull's progress is told (ms, default 5 s). */
  progressIntervalMs?: number
  /** Where the registry credentials are read (the Docker config). */
  auth?: AuthOptions
  /** How long to wait for the registry's answer to whether an image can be pulled (ms, default 30 s). */
  statusTimeoutMs?: number
  clock?: Clock
  /** Told when a pull ends, once per pull however many starts share it (fgmachine_image_pulls_total): how, how long, how many bytes it downloaded. */
  onPulled?: (ok: boolean, seconds: number, bytes: number) => void
}

interface Listener {
  onProgress?: (p: PullProgress) => void
  onWarning?: (message: string) => void
}

interface Pull {
  done: Promise<void>
  listeners: Set<Listener>
  /** Told so far, for those who join later. */
  warnings: string[]
  /** Downloaded so far (its last progress). */
  bytes: number
}

/** The image side of the Docker client: one pull per image, shared by whoever needs it, with the host's credentials. */
export class ImagePuller {
  #pulls = new Map<string, Pull>()

  constructor(
    private readonly docker: Docker,
    private readonly opts: ImagePullerOptions,
  ) {}

  async present(image: string): Promise<boolean> {
    try {
      await this.docker.getImage(image).inspect()
      return true
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false
      throw dockerError(`cannot inspect image ${image}`, err)
    }
  }

  /**
   * Pull the image unless it is here ('missing'), or every time ('always'). A
   * pull already going is joined whatever the policy. Aborting `signal` stops
   * this caller's wait (with the signal's reason) and its progress; the pull
   * goes on for the others.
   */
  async ensure(image: string, o: EnsureImageOptions = {}): Promise<void> {
    const { policy = 'missing', signal } = o
    signal?.throwIfAborted()
    if (policy === 'missing' && (await this.present(image))) return
    const pull = this.#pulls.get(image) ?? this.#start(image, policy)
    const listener: Listener = { onProgress: o.onProgress, onWarning: o.onWarning }
    for (const w of pull.warnings) o.onWarning?.(w)
    pull.listeners.add(listener)
    let onAbort: (() => void) | undefined
    try {
      await Promise.race([
        pull.done,
        new Promise<never>((_, reject) => {
          if (!signal) return
          onAbort = () => reject(signal.reason)
          signal.addEventListener('abort', onAbort, { once: true })
        }),
      ])
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort)
      pull.listeners.delete(listener)
    }
  }

  #start(image: string, policy: PullPolicy): Pull {
    const pull: Pull = { done: Promise.resolve(), listeners: new Set(), warnings: [], bytes: 0 }
    const each = (f: (l: Listener) => void) => {
      for (const l of pull.listeners) {
        try {
          f(l)
        } catch {
          // one listener's trouble is not the others'
        }
      }
    }
    const clock = this.opts.clock ?? realClock
    const began = clock.now()
    pull.done = (async () => {
      // Read afresh for each pull: a `docker login` after FGMachine started counts.
      const resolved = await resolveRegistryAuth(image, this.opts.auth)
      for (const w of resolved.warnings) {
        pull.warnings.push(w)
        each((l) => l.onWarning?.(w))
      }
      try {
        await pullImage(this.docker, image, {
          stallMs: this.opts.pullStallMs,
          auth: resolved.auth,
          progressIntervalMs: this.opts.progressIntervalMs,
          clock: this.opts.clock,
          onProgress: (p) => {
            pull.bytes = p.downloadedBytes
            each((l) => l.onProgress?.(p))
          },
        })
      } catch (err) {
        throw await this.#explain(image, policy, resolved, err)
      }
    })()
    const ended = (ok: boolean) => {
      this.#pulls.delete(image)
      this.opts.onPulled?.(ok, Math.max(0, clock.now() - began) / 1000, pull.bytes)
    }
    // Its failure is each waiter's to handle; this handles it too, so none waiting is no unhandled rejection.
    void pull.done.then(
      () => ended(true),
      () => ended(false),
    )
    this.#pulls.set(image, pull)
    return pull
  }

  /** Docker's reason, and how to fix it when the registry refused the credentials or the policy left a local copy unused. */
  async #explain(image: string, policy: PullPolicy, resolved: ResolvedAuth, err: unknown): Promise<DockerError> {
    const e = err instanceof DockerError ? err : dockerError(`cannot pull image ${image}`, err)
    let message = e.message
    if (isAuthFailure(message)) message += `; ${loginAdvice(resolved)}`
    // As `docker run --pull always`: a failed refresh fails, even with a copy here. Say so.
    if (policy === 'always' && (await this.present(image).catch(() => false))) {
      message += '; the copy of the image on this machine was not used because the project says "pull": "always" (set "pull": "missing" to run the local copy)'
    }
    return new DockerError(message, e.statusCode, { cause: err })
  }

  /** Here, or pullable (Docker asks the registry for the manifest, with the credentials a pull would use), or why not. */
  async status(image: string, o: Pick<EnsureImageOptions, 'onWarning'> = {}): Promise<ImageStatus> {
    if (await this.present(image)) return 'present'
    const resolved = await resolveRegistryAuth(image, this.opts.auth)
    for (const w of resolved.warnings) o.onWarning?.(w)
    if (!resolved.registry) return { problem: 'it is an image id, which names a local image only: there is nothing to pull' }
    const clock = this.opts.clock ?? realClock
    const timeoutMs = this.opts.statusTimeoutMs ?? 30_000
    const timer = new AbortController()
    try {
      await Promise.race([
        this.docker.getImage(image).distribution(resolved.auth ? { authconfig: resolved.auth } : {}),
        clock.sleep(timeoutMs, timer.signal).then(() => {
          throw new Error(`the registry did not answer within ${Math.round(timeoutMs / 1000)} s`)
        }),
      ])
      return 'pullable'
    } catch (err) {
      const e = err as { json?: { message?: string }; message?: string }
      const reason = (e.json?.message ?? e.message ?? String(err)).trim()
      return { problem: isAuthFailure(reason) ? `${reason}; ${loginAdvice(resolved)}` : reason }
    } finally {
      timer.abort()
    }
  }
}

import { Agent, FormData, fetch, type Dispatcher } from 'undici'
import { openAsBlob } from 'node:fs'

/** A call to FGLab that did not succeed. */
export class FglabError extends Error {
  override readonly name = 'FglabError'
  readonly code = 'FGM_FGLAB'
  constructor(
    message: string,
    /** HTTP status, or undefined when FGLab was not reached. */
    readonly status: number | undefined,
    /** Whether trying again may succeed (network errors, 5xx, 408, 429, and the credential answers 401/403/407). */
    readonly retryable: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/**
 * 4xx answers worth trying again. 408/425/429 pass by themselves; 401, 403 and
 * 407 mean FGMachine's credentials (or a proxy's) are wrong, which an operator
 * fixes: dropping the reports meanwhile would lose every result. Any other
 * 4xx (404: the experiment was deleted in FGLab; 413: a proxy's body limit)
 * will not succeed however often it is sent.
 */
const RETRYABLE_STATUS = new Set([401, 403, 407, 408, 425, 429])

export function isRetryable(err: unknown): boolean {
  return err instanceof FglabError ? err.retryable : true
}

export interface UploadFile {
  /** Path on disk; streamed, never read whole into memory. */
  path: string
  /** File name as FGLab stores it. */
  name: string
  /** MIME type. */
  type: string
}

export interface MachineSpecs {
  address: string
  hostname: string
  os: { type: string; platform: string; arch: string; release: string }
  cpus: string[]
  mem: string
  gpus: string[]
  [extra: string]: unknown
}

export interface FglabClientOptions {
  /** FGLab's base URL; credentials in it (`http://user:pass@host`) are sent as basic auth. */
  url: string
  /** Per-request time limit for headers and body (ms). */
  timeoutMs?: number
  dispatcher?: Dispatcher
}

/**
 * The one client for every call FGMachine makes to FGLab (PROTOCOL.md).
 * Each method makes one attempt; retrying is the caller's (the outbox's) job.
 */
export class FglabClient {
  readonly baseUrl: string
  readonly #auth: string | undefined
  readonly #dispatcher: Dispatcher

  constructor(opts: FglabClientOptions) {
    const u = new URL(opts.url)
    this.#auth =
      u.username || u.password
        ? 'Basic ' + Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')
        : undefined
    u.username = ''
    u.password = ''
    this.baseUrl = u.toString().replace(/\/+$/, '')
    const timeout = opts.timeoutMs ?? 30_000
    this.#dispatcher = opts.dispatcher ?? new Agent({ headersTimeout: timeout, bodyTimeout: timeout, connectTimeout: Math.min(timeout, 10_000) })
  }

  registerMachine(specs: MachineSpecs): Promise<{ _id: string } & Record<string, unknown>> {
    return this.#call('POST', '/api/v1/machines', specs) as Promise<{ _id: string }>
  }

  updateProjects(machineId: string, projects: Record<string, unknown>): Promise<unknown> {
    return this.#call('POST', `/api/v1/machines/${encodeURIComponent(machineId)}/projects`, { projects })
  }

  experimentStarted(id: string): Promise<unknown> {
    return this.#call('PUT', `/api/v1/experiments/${encodeURIComponent(id)}/started`)
  }

  updateExperiment(id: string, fields: Record<string, unknown>): Promise<unknown> {
    return this.#call('PUT', `/api/v1/experiments/${encodeURIComponent(id)}`, fields)
  }

  async uploadFiles(id: string, files: readonly UploadFile[]): Promise<unknown> {
    const form = new FormData()
    for (const f of files) form.append('_files', await openAsBlob(f.path, { type: f.type }), f.name)
    return this.#call('PUT', `/api/v1/experiments/${encodeURIComponent(id)}/files`, form)
  }

  experimentFinished(id: string): Promise<unknown> {
    return this.#call('PUT', `/api/v1/experiments/${encodeURIComponent(id)}/finished`)
  }

  /** Is FGLab answering at all? Any HTTP answer counts; only a failure to connect (or a time-out) does not: it throws. */
  async ping(timeoutMs = 3000): Promise<void> {
    try {
      const res = await fetch(this.baseUrl + '/', {
        method: 'HEAD',
        headers: this.#auth ? { authorization: this.#auth } : {},
        dispatcher: this.#dispatcher,
        signal: AbortSignal.timeout(timeoutMs),
      })
      await res.body?.cancel()
    } catch (err) {
      const cause = (err as Error & { cause?: Error }).cause
      throw new FglabError(`FGLab unreachable (${cause?.message ?? (err as Error).message})`, undefined, true, { cause: err })
    }
  }

  /** Let go of connections; requests still in flight are cancelled (their reports stay in the outbox). */
  async close(): Promise<void> {
    await this.#dispatcher.destroy()
  }

  async #call(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = {}
    if (this.#auth) headers.authorization = this.#auth
    let payload: string | FormData | undefined
    if (body instanceof FormData) payload = body
    else if (body !== undefined) {
      headers['content-type'] = 'application/json'
      payload = JSON.stringify(body)
    }
    const what = `${method} ${path}`
    let res
    try {
      res = await fetch(this.baseUrl + path, { method, headers, body: payload, dispatcher: this.#dispatcher })
    } catch (err) {
      const cause = (err as Error & { cause?: Error }).cause
      if (cause?.name === 'NotReadableError' || (err as Error).name === 'NotReadableError') {
        // The file changed while it was being streamed: not FGLab's doing. Sent again, whole, on the next try.
        throw new FglabError(`${what}: the file changed while it was being uploaded; it is sent again`, undefined, true, { cause: err })
      }
      throw new FglabError(`${what}: FGLab unreachable (${cause?.message ?? (err as Error).message})`, undefined, true, { cause: err })
    }
    const text = await res.text().catch(() => '')
    if (!res.ok) {
      const retryable = res.status >= 500 || RETRYABLE_STATUS.has(res.status)
      throw new FglabError(`${what}: FGLab answered ${res.status} ${text.slice(0, 200)}`, res.status, retryable)
    }
    if (text === '') return undefined
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }
}

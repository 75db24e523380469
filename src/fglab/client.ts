import type { Readable } from 'node:stream'
import { Agent, request, type Dispatcher } from 'undici'
import { timed } from '../util/timed.js'

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
    options?: ErrorOptions & { answer?: string; fileChanged?: boolean },
  ) {
    super(message, options)
    this.answer = options?.answer ?? ''
    this.fileChanged = options?.fileChanged ?? false
  }

  /** The start of FGLab's answer (its body), to tell one refusal from another. */
  readonly answer: string
  /** The results file changed while it was sent (FGLab is not at fault). */
  readonly fileChanged: boolean
}

/**
 * 4xx answers worth trying again. 408/425/429 pass by themselves; 401, 403 and
 * 407 mean FGMachine's credentials (or a proxy's) are wrong, which an operator
 * fixes: dropping the reports meanwhile would lose every result. Any other
 * 4xx (404, or 413 from a proxy's body limit) will not succeed however often
 * it is sent.
 */
const RETRYABLE_STATUS = new Set([401, 403, 407, 408, 425, 429])

export function isRetryable(err: unknown): boolean {
  return err instanceof FglabError ? err.retryable : true
}

/** The `code` of a streamed body's error when its file changed while it was read: not FGLab's doing. */
export const FILE_CHANGED = 'FGM_FILE_CHANGED'

/** A request body made elsewhere (a results file's upload), streamed or whole, of a length known before it is sent. */
export interface StreamedBody {
  body: Readable | Buffer
  length: number
  contentType: string
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
  /** Time limit for FGLab's answer to begin, and between two pieces of it (ms). */
  timeoutMs?: number
  dispatcher?: Dispatcher
  /**
   * Told of every request that got FGLab's answer or failed to: which call
   * (`register`, `update_machine`, `projects`, `started`, `update`, `files`,
   * `finished`, `exists`), how long it took, and its error (src/metrics.ts).
   */
  onRequest?: (call: FglabCall, seconds: number, err?: FglabError) => void
}

/** The calls FGMachine makes to FGLab, by a short name (a metrics label). */
export type FglabCall = 'register' | 'update_machine' | 'projects' | 'started' | 'update' | 'files' | 'finished' | 'exists'

/**
 * The one client for every call FGMachine makes to FGLab (docs/PROTOCOL.md).
 * Each method makes one attempt; retrying is the caller's job.
 */
export class FglabClient {
  readonly baseUrl: string
  readonly #auth: string | undefined
  readonly #dispatcher: Dispatcher
  readonly #onRequest: FglabClientOptions['onRequest']

  constructor(opts: FglabClientOptions) {
    this.#onRequest = opts.onRequest
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
    return this.#call('register', 'POST', '/api/v1/machines', specs) as Promise<{ _id: string }>
  }

  /** `$set` these fields on the machine's record (its address, name, GPUs…). The answer is not read, as for experiments. */
  updateMachine(machineId: string, fields: Record<string, unknown>): Promise<unknown> {
    return this.#call('update_machine', 'PUT', `/api/v1/machines/${encodeURIComponent(machineId)}`, fields)
  }

  updateProjects(machineId: string, projects: Record<string, unknown>): Promise<unknown> {
    return this.#call('projects', 'POST', `/api/v1/machines/${encodeURIComponent(machineId)}/projects`, { projects })
  }

  experimentStarted(id: string): Promise<unknown> {
    return this.#call('started', 'PUT', `/api/v1/experiments/${encodeURIComponent(id)}/started`)
  }

  /** `$set` these fields. FGLab's `{"msg": ...}` is not read: it says "error" for every update that worked (docs/PROTOCOL.md). */
  updateExperiment(id: string, fields: Record<string, unknown>): Promise<unknown> {
    return this.#call('update', 'PUT', `/api/v1/experiments/${encodeURIComponent(id)}`, fields)
  }

  /** Upload files: a multipart/form-data body, streamed (results/upload.ts makes it). */
  uploadFiles(id: string, body: StreamedBody): Promise<unknown> {
    return this.#call('files', 'PUT', `/api/v1/experiments/${encodeURIComponent(id)}/files`, body)
  }

  experimentFinished(id: string): Promise<unknown> {
    return this.#call('finished', 'PUT', `/api/v1/experiments/${encodeURIComponent(id)}/finished`)
  }

  /**
   * Whether FGLab still has this experiment. FGLab answers 200 with the
   * document, or 200 with an empty body once it was deleted (never 404).
   */
  async experimentExists(id: string): Promise<boolean> {
    // Only the start of the answer is read: the document may be megabytes of charts.
    const start = await this.#call('exists', 'GET', `/api/v1/experiments/${encodeURIComponent(id)}`, undefined, 16)
    const text = String(start ?? '').trim()
    return text !== '' && text !== 'null'
  }

  /** Is FGLab answering at all? Any HTTP answer counts; only a failure to connect (or a time-out) does not: it throws. */
  async ping(timeoutMs = 3000): Promise<void> {
    try {
      const res = await request(this.baseUrl + '/', {
        method: 'HEAD',
        headers: this.#auth ? { authorization: this.#auth } : {},
        dispatcher: this.#dispatcher,
        signal: AbortSignal.timeout(timeoutMs),
      })
      await res.body.dump()
    } catch (err) {
      throw new FglabError(`FGLab unreachable (${describe(err)})`, undefined, true, { cause: err })
    }
  }

  /** Let go of connections; requests still in flight are cancelled (their reports stay queued). */
  async close(): Promise<void> {
    await this.#dispatcher.destroy()
  }

  /** One request, timed and its failure told (`onRequest`); see #request. */
  async #call(call: FglabCall, method: Dispatcher.HttpMethod, path: string, body?: unknown, peekBytes?: number): Promise<unknown> {
    return timed(
      () => this.#request(method, path, body, peekBytes),
      (seconds, failed) => {
        // A file that changed while it was sent is not FGLab's failure: not told.
        if (!(failed instanceof FglabError && failed.fileChanged)) this.#onRequest?.(call, seconds, failed as FglabError | undefined)
      },
    )
  }

  /** One request; its answer parsed as JSON (or text). With `peekBytes`, only that much of a 2xx answer is read, as text. */
  async #request(method: Dispatcher.HttpMethod, path: string, body?: unknown, peekBytes?: number): Promise<unknown> {
    const headers: Record<string, string> = {}
    if (this.#auth) headers.authorization = this.#auth
    let payload: string | Buffer | Readable | undefined
    if (isStreamed(body)) {
      headers['content-type'] = body.contentType
      headers['content-length'] = String(body.length)
      payload = body.body
    } else if (body !== undefined) {
      headers['content-type'] = 'application/json'
      payload = JSON.stringify(body)
    }
    const what = `${method} ${path}`
    let status: number
    let text: string
    try {
      const res = await request(this.baseUrl + path, { method, headers, body: payload, dispatcher: this.#dispatcher })
      status = res.statusCode
      text = peekBytes !== undefined && status >= 200 && status < 300 ? await peek(res.body, peekBytes) : await res.body.text()
    } catch (err) {
      const failed = isStreamed(body) && !Buffer.isBuffer(body.body) ? body.body.errored : null
      if ((failed as NodeJS.ErrnoException | null)?.code === FILE_CHANGED) {
        // The file could not be read to its end (it changed while it was sent): not FGLab's doing.
        throw new FglabError(`${what}: ${failed!.message}; it is sent again`, undefined, true, { cause: err, fileChanged: true })
      }
      throw new FglabError(`${what}: FGLab unreachable (${describe(err)})`, undefined, true, { cause: err })
    }
    if (status < 200 || status >= 300) {
      const retryable = status >= 500 || RETRYABLE_STATUS.has(status)
      const answer = text.slice(0, 200)
      throw new FglabError(`${what}: FGLab answered ${status} ${answer}`, status, retryable, { answer })
    }
    if (text === '') return undefined
    if (peekBytes !== undefined) return text
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }
}

/** The first `n` bytes of an answer (or fewer), as text; the rest is read and dropped. */
async function peek(body: Dispatcher.ResponseData['body'], n: number): Promise<string> {
  const chunks: Buffer[] = []
  let got = 0
  for await (const chunk of body) {
    if (got < n) {
      chunks.push(chunk as Buffer)
      got += (chunk as Buffer).length
    }
  }
  return Buffer.concat(chunks).subarray(0, n).toString()
}

function isStreamed(body: unknown): body is StreamedBody {
  return typeof body === 'object' && body !== null && 'contentType' in body && 'length' in body
}

function describe(err: unknown): string {
  const e = err as Error & { cause?: Error; code?: string }
  return e.cause?.message ?? (e.code ? `${e.code}: ${e.message}` : e.message)
}

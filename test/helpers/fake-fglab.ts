import { randomBytes } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'

/** One call FGLab received. */
export interface RecordedCall {
  method: string
  path: string
  body?: unknown
  files?: Array<{ field: string; name: string; type: string; data: Buffer }>
  auth?: string
  at: number
}

export interface FakeExperiment {
  started: number
  finished: number
  /** Every field ever `$set`, latest value wins (as in FGLab's MongoDB document). */
  fields: Record<string, unknown>
  /** Files by name; a new upload with the same name replaces the old one, as in FGLab. */
  files: Map<string, { type: string; data: Buffer }>
  /** The order of calls for this experiment: 'started', 'update', 'files', 'finished'. */
  calls: string[]
}

/**
 * A stand-in for an unchanged FGLab server, written from PROTOCOL.md: it
 * answers the calls a machine makes and records every one of them.
 * `failWith(status)` / `failWith('reset')` make it refuse calls, to play an outage.
 */
export class FakeFglab {
  readonly calls: RecordedCall[] = []
  readonly machines = new Map<string, Record<string, unknown>>()
  readonly projects = new Map<string, unknown>()
  readonly experiments = new Map<string, FakeExperiment>()
  #server: http.Server
  #failure: number | 'reset' | undefined
  #waiters: Array<() => void> = []
  url = ''

  constructor(private readonly password?: { user: string; pass: string }) {
    this.#server = http.createServer((req, res) => void this.#handle(req, res))
  }

  async start(port = 0): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(port, '127.0.0.1', resolve))
    const { port: p } = this.#server.address() as AddressInfo
    this.url = `http://127.0.0.1:${p}`
    return this.url
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  /** Make every call fail (an HTTP status, or a dropped connection) until `recover()`. */
  failWith(f: number | 'reset'): void {
    this.#failure = f
  }

  recover(): void {
    this.#failure = undefined
  }

  experiment(id: string): FakeExperiment {
    let e = this.experiments.get(id)
    if (!e) {
      e = { started: 0, finished: 0, fields: {}, files: new Map(), calls: [] }
      this.experiments.set(id, e)
    }
    return e
  }

  /** Resolve when `check()` holds (checked after every call), or reject after `timeoutMs`. */
  async waitFor(check: () => boolean, timeoutMs = 30_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!check()) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`fake FGLab: timed out waiting for ${what}`)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250))
        this.#waiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
    }
  }

  /** Wait until these experiments have all been reported `finished`. */
  waitFinished(ids: string[], timeoutMs = 60_000): Promise<void> {
    return this.waitFor(() => ids.every((id) => (this.experiments.get(id)?.finished ?? 0) > 0), timeoutMs, `finished of ${ids.length} experiment(s)`)
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const raw = Buffer.concat(chunks)
    if (this.#failure === 'reset') {
      req.socket.destroy()
      return
    }
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
      for (const w of this.#waiters.splice(0)) w()
    }
    if (this.#failure !== undefined) return send(this.#failure, { error: 'FGLab is down (fake)' })
    if (this.password) {
      const expected = 'Basic ' + Buffer.from(`${this.password.user}:${this.password.pass}`).toString('base64')
      if (req.headers.authorization !== expected) return send(401, { error: 'Unauthorized' })
    }
    const url = new URL(req.url ?? '/', 'http://x')
    const call: RecordedCall = { method: req.method ?? '', path: url.pathname, at: Date.now(), auth: req.headers.authorization }
    const type = req.headers['content-type'] ?? ''
    if (type.startsWith('multipart/form-data')) {
      const form = await new Response(raw, { headers: { 'content-type': type } }).formData()
      call.files = []
      for (const [field, value] of form.entries()) {
        if (typeof value === 'string') continue
        call.files.push({ field, name: value.name, type: value.type, data: Buffer.from(await value.arrayBuffer()) })
      }
    } else if (raw.length > 0) {
      try {
        call.body = JSON.parse(raw.toString())
      } catch {
        return send(400, { error: 'invalid JSON' })
      }
    }
    this.calls.push(call)
    this.#route(call, send)
  }

  #route(call: RecordedCall, send: (status: number, body: unknown) => void): void {
    const { method, path } = call
    let m: RegExpExecArray | null
    if (method === 'POST' && path === '/api/v1/machines') {
      const _id = randomBytes(12).toString('hex')
      const doc = { ...(call.body as object), _id }
      this.machines.set(_id, doc)
      return send(201, doc)
    }
    if (method === 'POST' && (m = /^\/api\/v1\/machines\/([^/]+)\/projects$/.exec(path))) {
      if (!this.machines.has(m[1]!)) return send(404, { error: 'Machine not found' })
      this.projects.set(m[1]!, (call.body as { projects: unknown }).projects)
      return send(200, { msg: 'success' })
    }
    if (method === 'PUT' && (m = /^\/api\/v1\/experiments\/([0-9a-f]{24})(\/started|\/finished|\/files)?$/.exec(path))) {
      const e = this.experiment(m[1]!)
      switch (m[2]) {
        case '/started':
          e.started++
          e.calls.push('started')
          return send(200, { msg: 'success' })
        case '/finished':
          e.finished++
          e.calls.push('finished')
          return send(200, { msg: 'success' })
        case '/files':
          for (const f of call.files ?? []) if (f.field === '_files') e.files.set(f.name, { type: f.type, data: f.data })
          e.calls.push('files')
          return send(200, { message: 'Files uploaded' })
        default: {
          const fields = { ...(call.body as Record<string, unknown>) }
          delete fields._id
          Object.assign(e.fields, fields)
          e.calls.push('update')
          return send(200, { msg: 'success' })
        }
      }
    }
    send(404, { error: 'not found (fake FGLab)' })
  }
}

import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { calculateObjectSize } from 'bson'
import busboy from 'busboy'

/** One call FGLab received. */
export interface RecordedCall {
  method: string
  path: string
  body?: unknown
  files?: Array<{ field: string; name: string; type: string; size: number }>
  auth?: string
  /** The HTTP status it was answered with. */
  status?: number
  at: number
}

export interface StoredFile {
  type: string
  size: number
  sha256: string
  /** The bytes, for files up to `keepBytes` (larger ones are only hashed). */
  data?: Buffer
}

export interface FakeExperiment {
  started: number
  finished: number
  /** Every field ever `$set`, latest value wins (as in FGLab's MongoDB document). */
  fields: Record<string, unknown>
  /** Files by name; a new upload with the same name replaces the old one, as in FGLab. */
  files: Map<string, StoredFile>
  /** The order of calls for this experiment that FGLab took: 'started', 'update', 'files', 'finished'. */
  calls: string[]
  /** Calls it answered 500 (MongoDB refused them). */
  refused: number
}

/** MongoDB's limit on a document, as BSON. */
const MAX_BSON = 16 * 1024 * 1024

/** What MongoDB (3.6, under FGLab's `$set`) says of these fields: a refusal's message, or undefined. */
function mongoRefusal(fields: Record<string, unknown>, merged: Record<string, unknown>): string | undefined {
  if (Object.keys(fields).length === 0) return "'$set' is empty. You must specify a field like so: {$set: {<field>: ...}}"
  const bad = (v: unknown): string | undefined => {
    if (typeof v !== 'object' || v === null) return undefined
    for (const [k, x] of Object.entries(v)) {
      if (!Array.isArray(v) && (k.includes('.') || k.startsWith('$'))) return k
      const inner = bad(x)
      if (inner) return inner
    }
    return undefined
  }
  const name = bad(fields)
  if (name) return `The dotted field '${name}' in '${name}' is not valid for storage.`
  if (calculateObjectSize(merged) > MAX_BSON) return 'Resulting document after update is larger than 16777216'
  return undefined
}

/**
 * A stand-in for an unchanged FGLab server (its lab.js over MongoDB 3.6), as
 * docs/PROTOCOL.md says it *really* answers: `{"msg": "error"}` to every update
 * that worked, 500 for an update MongoDB refuses (`{}`, a "." or "$" in a
 * field name, a document over 16 MiB), 500 to uploads for an experiment
 * deleted in FGLab, an empty 200 to GET of one. It records every call.
 * `failWith(status)` / `failWith('reset')` make it refuse calls, to play an
 * outage, `answer` makes it answer garbage or hang; `deleteExperiment(id)` plays the trash button,
 * `deleteMachine(id)` the machine's delete.
 */
export class FakeFglab {
  readonly calls: RecordedCall[] = []
  readonly machines = new Map<string, Record<string, unknown>>()
  readonly projects = new Map<string, unknown>()
  readonly experiments = new Map<string, FakeExperiment>()
  readonly deleted = new Set<string>()
  /** Uploaded files up to this size keep their bytes. */
  keepBytes = 64 * 1024 * 1024
  /** Refuse some calls only (a proxy in front of FGLab, say): a status, or 'reset' to cut the connection before reading the body. */
  refuse: (call: { method: string; path: string }) => number | 'reset' | undefined = () => undefined
  /**
   * Answer some calls as a broken FGLab (or something else at its address) would: this status and
   * body as they are, or 'hang' to never answer. Unlike `refuse`, such calls are recorded in `calls`.
   */
  answer: (call: { method: string; path: string }) => { status: number; body: string; type?: string } | 'hang' | undefined = () => undefined
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

  /** The experiment's trash button: gone from the database, files and all. */
  deleteExperiment(id: string): void {
    this.deleted.add(id)
    this.experiments.delete(id)
  }

  /** The machine's delete button in FGLab: its document (and projects) gone; its experiments stay. */
  deleteMachine(id: string): void {
    this.machines.delete(id)
    this.projects.delete(id)
  }

  experiment(id: string): FakeExperiment {
    let e = this.experiments.get(id)
    if (!e) {
      e = { started: 0, finished: 0, fields: {}, files: new Map(), calls: [], refused: 0 }
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
    const url = new URL(req.url ?? '/', 'http://x')
    const call: RecordedCall = { method: req.method ?? '', path: url.pathname, at: Date.now(), auth: req.headers.authorization }
    const send = (status: number, body: unknown, type = 'application/json') => {
      call.status = status
      res.writeHead(status, { 'content-type': type })
      res.end(body === undefined ? '' : type === 'application/json' ? JSON.stringify(body) : String(body))
      for (const w of this.#waiters.splice(0)) w()
    }
    const refusal = this.refuse({ method: call.method, path: call.path })
    if (refusal === 'reset') {
      req.socket.destroy()
      return
    }
    const type = req.headers['content-type'] ?? ''
    const upload = /^\/api\/v1\/experiments\/[0-9a-f]{24}\/files$/.test(url.pathname) && type.startsWith('multipart/form-data')
    let stored: Array<{ field: string; name: string; file: StoredFile }> = []
    try {
      if (upload) stored = await this.#readFiles(req)
      else {
        const chunks: Buffer[] = []
        for await (const c of req) chunks.push(c as Buffer)
        const raw = Buffer.concat(chunks)
        if (raw.length > 0) call.body = JSON.parse(raw.toString())
      }
    } catch {
      return send(400, { error: 'bad request body' })
    }
    if (this.#failure === 'reset') {
      req.socket.destroy()
      return
    }
    if (this.#failure !== undefined) return send(this.#failure, { error: 'FGLab is down (fake)' })
    if (refusal !== undefined) return send(refusal, { error: 'refused (fake)' })
    const answer = this.answer({ method: call.method, path: call.path })
    if (answer !== undefined) {
      this.calls.push(call)
      if (answer !== 'hang') {
        call.status = answer.status
        res.writeHead(answer.status, { 'content-type': answer.type ?? 'text/html' })
        res.end(answer.body)
      }
      for (const w of this.#waiters.splice(0)) w()
      return
    }
    if (this.password) {
      const expected = 'Basic ' + Buffer.from(`${this.password.user}:${this.password.pass}`).toString('base64')
      if (req.headers.authorization !== expected) return send(401, { error: 'Unauthorized' })
    }
    if (upload) call.files = stored.map((f) => ({ field: f.field, name: f.name, type: f.file.type, size: f.file.size }))
    this.calls.push(call)
    this.#route(call, stored, send)
  }

  /** The multipart body, streamed through busboy (as multer, under FGLab, reads it): big files are hashed, not kept. */
  #readFiles(req: http.IncomingMessage): Promise<Array<{ field: string; name: string; file: StoredFile }>> {
    return new Promise((resolve, reject) => {
      const out: Array<{ field: string; name: string; file: StoredFile }> = []
      const pending: Array<Promise<void>> = []
      const bb = busboy({ headers: req.headers, defParamCharset: 'utf8' })
      bb.on('file', (field, stream, info) => {
        const hash = createHash('sha256')
        const kept: Buffer[] = []
        let size = 0
        pending.push(
          new Promise<void>((done, fail) => {
            stream.on('data', (b: Buffer) => {
              hash.update(b)
              size += b.length
              if (size <= this.keepBytes) kept.push(b)
            })
            stream.on('error', fail)
            stream.on('end', () => {
              const file = { type: info.mimeType, size, sha256: hash.digest('hex'), ...(size <= this.keepBytes && { data: Buffer.concat(kept) }) }
              out.push({ field, name: info.filename ?? '', file })
              done()
            })
          }),
        )
      })
      bb.on('error', reject)
      bb.on('close', () => void Promise.all(pending).then(() => resolve(out), reject))
      req.pipe(bb)
    })
  }

  #route(call: RecordedCall, stored: Array<{ field: string; name: string; file: StoredFile }>, send: (status: number, body: unknown, type?: string) => void): void {
    const { method, path } = call
    let m: RegExpExecArray | null
    if (method === 'POST' && path === '/api/v1/machines') {
      const _id = randomBytes(12).toString('hex')
      const doc = { ...(call.body as object), _id }
      this.machines.set(_id, doc)
      return send(201, doc)
    }
    if (method === 'PUT' && (m = /^\/api\/v1\/machines\/([0-9a-f]{24})$/.exec(path))) {
      // lab.js: $set on the machine's record; its answer says nothing useful, as for experiments.
      const doc = this.machines.get(m[1]!)
      if (!doc) return send(200, { msg: 'error' })
      Object.assign(doc, call.body as object)
      return send(200, { msg: 'success' })
    }
    if (method === 'POST' && (m = /^\/api\/v1\/machines\/([^/]+)\/projects$/.exec(path))) {
      if (!this.machines.has(m[1]!)) return send(404, { error: 'Machine not found' })
      this.projects.set(m[1]!, (call.body as { projects: unknown }).projects)
      return send(200, { msg: 'success' })
    }
    if (method === 'GET' && (m = /^\/api\/v1\/experiments\/([0-9a-f]{24})$/.exec(path))) {
      // Express's res.send(null) for a document that is gone: 200, empty.
      if (this.deleted.has(m[1]!)) return send(200, undefined, 'text/html')
      const e = this.experiment(m[1]!)
      return send(200, { _id: m[1], ...e.fields, _files: [...e.files.keys()].map((filename) => ({ filename })) })
    }
    if (method === 'PUT' && (m = /^\/api\/v1\/experiments\/([0-9a-f]{24})(\/started|\/finished|\/files)?$/.exec(path))) {
      const id = m[1]!
      const gone = this.deleted.has(id)
      // lab.js reads the experiment first; for one deleted, `experiment._files` throws: Express's 500.
      if (m[2] === '/files' && gone) return send(500, "TypeError: Cannot read property '_files' of null", 'text/html')
      // Every update answers {"msg":"error"}: lab.js compares the driver's result object with 1.
      if (gone) return send(200, { msg: 'error' })
      const e = this.experiment(id)
      switch (m[2]) {
        case '/started':
          e.started++
          e.calls.push('started')
          return send(200, { msg: 'error' })
        case '/finished':
          e.finished++
          e.calls.push('finished')
          return send(200, { msg: 'error' })
        case '/files':
          for (const f of stored) if (f.field === '_files') e.files.set(f.name, f.file)
          e.calls.push('files')
          return send(200, { message: 'Files uploaded' })
        default: {
          const fields = { ...(call.body as Record<string, unknown>) }
          delete fields._id
          const refusal = mongoRefusal(fields, { ...e.fields, ...fields })
          if (refusal) {
            e.refused++
            return send(500, `MongoError: ${refusal}`, 'text/html')
          }
          Object.assign(e.fields, fields)
          e.calls.push('update')
          return send(200, { msg: 'error' })
        }
      }
    }
    send(404, { error: 'not found (fake FGLab)' })
  }
}

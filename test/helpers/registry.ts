import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { gzipSync } from 'node:zlib'

const MANIFEST_V2 = 'application/vnd.docker.distribution.manifest.v2+json'
const CONFIG_V1 = 'application/vnd.docker.container.image.v1+json'
const LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip'

export interface RegistryImage {
  /** Files besides busybox (`/bin/busybox` and a few applets): path in the image → content. */
  files?: Record<string, string>
  cmd?: string[]
  env?: string[]
  /** A second layer of this many random (incompressible) bytes, to make the pull bigger. */
  padBytes?: number
}

export interface PutImage {
  /** `127.0.0.1:<port>/<name>:<tag>`, what a project's `image` says. */
  ref: string
  manifestDigest: string
  /** The compressed size of every layer together. */
  layerBytes: number
  /** Each layer's blob digest. */
  layers: string[]
}

/** Layer blobs stop after `fraction` of their bytes until `release()`. */
export interface Hold {
  /** Resolves once a layer's delivery stopped at the fraction. */
  reached: Promise<void>
  release(): void
}

const sha256 = (b: Buffer | string) => 'sha256:' + createHash('sha256').update(b).digest('hex')

function tarOf(fill: (root: string) => void): Buffer {
  const root = mkdtempSync(path.join(os.tmpdir(), 'fgm-registry-layer-'))
  try {
    fill(root)
    return execFileSync('tar', ['-C', root, '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-c', '.'], { maxBuffer: 256 * 1024 * 1024 })
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

function busyboxLayer(files: Record<string, string>): Buffer {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))
  if (!busybox) throw new Error('busybox is not installed: apt-get install busybox-static (.ci/run does this)')
  return tarOf((root) => {
    mkdirSync(path.join(root, 'bin'))
    mkdirSync(path.join(root, 'tmp'))
    chmodSync(path.join(root, 'tmp'), 0o1777)
    copyFileSync(busybox, path.join(root, 'bin/busybox'))
    chmodSync(path.join(root, 'bin/busybox'), 0o755)
    for (const a of ['sh', 'cat', 'echo', 'true', 'ls']) symlinkSync('busybox', path.join(root, 'bin', a))
    for (const [file, content] of Object.entries(files)) {
      const to = path.join(root, file)
      mkdirSync(path.dirname(to), { recursive: true })
      writeFileSync(to, content)
    }
  })
}

/**
 * A minimal Docker Registry (HTTP API v2) on 127.0.0.1, which Docker trusts
 * over plain HTTP: images built here from busybox (schema2 manifests, gzip'd
 * layers), optional Basic auth, a hold on layer delivery, and a count of the
 * requests it answered by method and path.
 */
export class TestRegistry {
  /** `127.0.0.1:<port>`: the registry part of image references and the key in config.json. */
  host = ''
  #server = createServer((req, res) => this.#serve(req, res))
  #sockets = new Set<Socket>()
  #blobs = new Map<string, { data: Buffer; layer: boolean }>()
  #manifests = new Map<string, Buffer>()
  #tags = new Map<string, string>()
  #requests = new Map<string, number>()
  #hold: { fraction: number; reached: () => void; released: Promise<void> } | undefined

  constructor(private readonly auth?: { username: string; password: string }) {
    this.#server.on('connection', (s) => {
      this.#sockets.add(s)
      s.on('close', () => this.#sockets.delete(s))
    })
  }

  async start(): Promise<this> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r))
    this.host = `127.0.0.1:${(this.#server.address() as AddressInfo).port}`
    return this
  }

  async close(): Promise<void> {
    this.#hold = undefined
    for (const s of this.#sockets) s.destroy()
    await new Promise<void>((r) => this.#server.close(() => r()))
  }

  /** Build an image and serve it as `name:tag` (replacing what the tag named before). */
  put(name: string, tag: string, image: RegistryImage = {}): PutImage {
    const tars = [busyboxLayer(image.files ?? {})]
    if (image.padBytes) tars.push(tarOf((root) => writeFileSync(path.join(root, 'pad'), randomBytes(image.padBytes!))))
    // The same files make the same layer (tar and gzip are deterministic here), as in a real registry.
    const layers = tars.map((tar) => ({ tar, gz: gzipSync(tar) }))
    const config = Buffer.from(
      JSON.stringify({
        architecture: process.arch === 'arm64' ? 'arm64' : 'amd64',
        os: 'linux',
        created: new Date().toISOString(),
        config: { Env: image.env ?? ['PATH=/bin'], Cmd: image.cmd ?? ['sh'] },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l.tar)) },
        history: layers.map(() => ({ created_by: 'fgmachine test registry' })),
      }),
    )
    this.#blobs.set(sha256(config), { data: config, layer: false })
    for (const l of layers) this.#blobs.set(sha256(l.gz), { data: l.gz, layer: true })
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST_V2,
        config: { mediaType: CONFIG_V1, size: config.length, digest: sha256(config) },
        layers: layers.map((l) => ({ mediaType: LAYER_GZIP, size: l.gz.length, digest: sha256(l.gz) })),
      }),
    )
    const digest = sha256(manifest)
    this.#manifests.set(digest, manifest)
    this.#tags.set(`${name}:${tag}`, digest)
    return { ref: `${this.host}/${name}:${tag}`, manifestDigest: digest, layerBytes: layers.reduce((n, l) => n + l.gz.length, 0), layers: layers.map((l) => sha256(l.gz)) }
  }

  /** From now on, every layer blob is sent up to `fraction` of its bytes, then waits for `release()`. */
  hold(fraction: number): Hold {
    let reached!: () => void
    let release!: () => void
    const reachedP = new Promise<void>((r) => (reached = r))
    const hold = { fraction, reached, released: new Promise<void>((r) => (release = r)) }
    this.#hold = hold
    return {
      reached: reachedP,
      release: () => {
        if (this.#hold === hold) this.#hold = undefined
        release()
      },
    }
  }

  /** How many requests it answered (any status) whose method and path match. */
  count(method: string, pathMatch: string | RegExp): number {
    let n = 0
    for (const [key, c] of this.#requests) {
      const [m, p] = key.split(' ') as [string, string]
      if (m === method && (typeof pathMatch === 'string' ? p === pathMatch : pathMatch.test(p))) n += c
    }
    return n
  }

  #authorized(req: IncomingMessage): boolean {
    if (!this.auth) return true
    const want = 'Basic ' + Buffer.from(`${this.auth.username}:${this.auth.password}`).toString('base64')
    return req.headers.authorization === want
  }

  #serve(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://registry')
    const key = `${req.method} ${url.pathname}`
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1)
    res.on('error', () => undefined)
    const error = (status: number, code: string, message: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers })
      res.end(JSON.stringify({ errors: [{ code, message, detail: null }] }))
    }
    if (!this.#authorized(req)) return error(401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': 'Basic realm="test"' })
    if (url.pathname === '/v2/' || url.pathname === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' })
      return void res.end('{}')
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname)
    if (!m || (req.method !== 'GET' && req.method !== 'HEAD')) return error(404, 'UNSUPPORTED', 'not served here')
    const [, name, kind, ref] = m as unknown as [string, string, string, string]
    if (kind === 'manifests') {
      const digest = ref.startsWith('sha256:') ? ref : this.#tags.get(`${name}:${ref}`)
      const body = digest ? this.#manifests.get(digest) : undefined
      if (!digest || !body) return error(404, 'MANIFEST_UNKNOWN', 'manifest unknown')
      res.writeHead(200, { 'content-type': MANIFEST_V2, 'content-length': body.length, 'docker-content-digest': digest })
      return void res.end(req.method === 'HEAD' ? undefined : body)
    }
    const blob = this.#blobs.get(ref)
    if (!blob) return error(404, 'BLOB_UNKNOWN', 'blob unknown')
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.data.length, 'docker-content-digest': ref })
    if (req.method === 'HEAD') return void res.end()
    const hold = blob.layer ? this.#hold : undefined
    if (!hold) return void res.end(blob.data)
    const cut = Math.floor(blob.data.length * hold.fraction)
    res.write(blob.data.subarray(0, cut), () => hold.reached())
    void hold.released.then(() => res.end(blob.data.subarray(cut)))
  }
}

/** A registry on a free port; `auth` makes it answer 401 (Basic) without those credentials. */
export function startRegistry(opts: { auth?: { username: string; password: string } } = {}): Promise<TestRegistry> {
  return new TestRegistry(opts.auth).start()
}

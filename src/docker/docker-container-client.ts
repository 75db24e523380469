import { existsSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { finished } from 'node:stream/promises'
import Docker from 'dockerode'
import {
  DockerError,
  type ContainerClient,
  type ContainerDetails,
  type ContainerExit,
  type ContainerOutput,
  type ContainerSpec,
  type ContainerSummary,
  type PullProgress,
} from './container-client.js'

function dockerError(what: string, err: unknown): DockerError {
  const e = err as { statusCode?: number; json?: { message?: string }; reason?: string; message?: string }
  const msg = e.json?.message ?? e.message ?? String(err)
  return new DockerError(`${what}: ${msg.trim()}`, e.statusCode, { cause: err })
}

/** Where the Docker engine is, from `DOCKER_HOST`, as the docker CLI reads it. */
export type DockerEndpoint =
  | { kind: 'socket'; path: string }
  | { kind: 'tcp'; host: string; port: number | undefined; tls: boolean }
  | { kind: 'ssh'; host: string; port: number; username: string | undefined }

/**
 * Docker's `DOCKER_HOST` forms: unix:///path (or a bare /path), tcp://host:port
 * (http:// and https:// too), ssh://user@host. Throws an Error saying what is
 * wrong with anything else (config.ts names the variable).
 */
export function parseDockerHost(dockerHost: string | undefined): DockerEndpoint {
  const v = dockerHost?.trim()
  if (!v) return { kind: 'socket', path: '/var/run/docker.sock' }
  if (v.startsWith('unix://')) return { kind: 'socket', path: v.slice('unix://'.length) || '/var/run/docker.sock' }
  if (v.startsWith('/')) return { kind: 'socket', path: v }
  const wrong = new Error(`must be unix:///path/to/docker.sock, tcp://host:port or ssh://user@host, not "${v}"`)
  let u: URL
  try {
    u = new URL(v)
  } catch {
    throw wrong
  }
  if (!u.hostname) throw wrong
  if (u.protocol === 'ssh:') return { kind: 'ssh', host: u.hostname, port: Number(u.port || 22), username: u.username ? decodeURIComponent(u.username) : undefined }
  if (u.protocol === 'tcp:' || u.protocol === 'http:' || u.protocol === 'https:') {
    return { kind: 'tcp', host: u.hostname, port: u.port ? Number(u.port) : undefined, tls: u.protocol === 'https:' }
  }
  throw wrong
}

/**
 * dockerode's options for `DOCKER_HOST`, as the docker CLI reads it: TCP uses
 * TLS when DOCKER_TLS_VERIFY or DOCKER_TLS is set (or the URL is https://), on
 * port 2376 unless one is given, with the client certificate from
 * DOCKER_CERT_PATH (default ~/.docker).
 */
export function dockerOptions(dockerHost: string | undefined, env: NodeJS.ProcessEnv = process.env): Docker.DockerOptions {
  const e = parseDockerHost(dockerHost)
  if (e.kind === 'socket') return { socketPath: e.path }
  if (e.kind === 'ssh') return { protocol: 'ssh', host: e.host, port: e.port, username: e.username, sshOptions: { agent: env.SSH_AUTH_SOCK } }
  const tls = e.tls || Boolean(env.DOCKER_TLS_VERIFY) || Boolean(env.DOCKER_TLS)
  if (!tls) return { host: e.host, port: e.port ?? 2375, protocol: 'http' }
  const certs = env.DOCKER_CERT_PATH || path.join(env.HOME ?? os.homedir(), '.docker')
  const pem = (name: string) => (existsSync(path.join(certs, name)) ? readFileSync(path.join(certs, name)) : undefined)
  const [ca, cert, key] = [pem('ca.pem'), pem('cert.pem'), pem('key.pem')]
  return { host: e.host, port: e.port ?? 2376, protocol: 'https', ...(ca && { ca }), ...(cert && key && { cert, key }) }
}

/** The ContainerClient over dockerode: dockerode's types stop here. */
export class DockerContainerClient implements ContainerClient {
  readonly docker: Docker
  #pulls = new Map<string, { done: Promise<void>; listeners: Set<(p: PullProgress) => void> }>()

  /** A pull that shows no progress for this long is cancelled (ms). */
  readonly pullStallMs: number

  constructor(dockerHost?: string, opts: { pullStallMs?: number } = {}) {
    this.docker = new Docker(dockerOptions(dockerHost))
    this.pullStallMs = opts.pullStallMs ?? 300_000
  }

  async ping(): Promise<void> {
    try {
      await this.docker.ping()
    } catch (err) {
      throw dockerError('Docker is not reachable', err)
    }
  }

  async runtimes(): Promise<string[]> {
    try {
      const info = (await this.docker.info()) as { Runtimes?: Record<string, unknown> }
      return Object.keys(info.Runtimes ?? {})
    } catch (err) {
      throw dockerError('Docker is not reachable', err)
    }
  }

  /**
   * Pull the image unless it is here. Aborting `signal` stops this caller's wait
   * (with the signal's reason) and its progress; the pull goes on for the others.
   */
  async ensureImage(image: string, onProgress?: (p: PullProgress) => void, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    try {
      await this.docker.getImage(image).inspect()
      return
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw dockerError(`cannot inspect image ${image}`, err)
    }
    // One pull per image, shared by concurrent starts; each of them hears its progress.
    let pull = this.#pulls.get(image)
    if (!pull) {
      const listeners = new Set<(p: PullProgress) => void>()
      const done = this.#pull(image, (p) => listeners.forEach((l) => l(p))).finally(() => this.#pulls.delete(image))
      pull = { done, listeners }
      this.#pulls.set(image, pull)
    }
    if (onProgress) pull.listeners.add(onProgress)
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
      if (onProgress) pull.listeners.delete(onProgress)
    }
  }

  /** Pull, cancelling when nothing comes for `pullStallMs` (a registry that accepts and never answers). */
  async #pull(image: string, onProgress: (p: PullProgress) => void): Promise<void> {
    const stallS = Math.round(this.pullStallMs / 1000)
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
      }, this.pullStallMs)
    }
    arm()
    try {
      const opened = this.docker.pull(image, { abortSignal: cancel.signal }).then(
        (s: NodeJS.ReadableStream) => s,
        (err: unknown) => {
          throw dockerError(`cannot pull image ${image}`, err)
        },
      )
      stream = await Promise.race([opened, watchdog])
      const s = stream
      await Promise.race([
        watchdog,
        new Promise<void>((resolve, reject) => {
          this.docker.modem.followProgress(
            s,
            (err: Error | null) => (err ? reject(dockerError(`cannot pull image ${image}`, err)) : resolve()),
            (event: { status?: string; id?: string; progress?: string; error?: string }) => {
              arm()
              if (event.error) return
              onProgress({ status: event.status ?? '', id: event.id, progress: event.progress })
            },
          )
        }),
      ])
    } finally {
      clearTimeout(timer)
    }
  }

  async create(spec: ContainerSpec): Promise<string> {
    const hostConfig: Docker.HostConfig = {
      Binds: spec.binds,
      ShmSize: spec.shmSizeBytes,
      Memory: spec.memoryBytes,
      NanoCpus: spec.nanoCpus,
      NetworkMode: spec.networkMode,
      SecurityOpt: ['no-new-privileges'],
    }
    if (spec.gpuDeviceIds?.length) {
      hostConfig.DeviceRequests = [{ Driver: 'nvidia', DeviceIDs: spec.gpuDeviceIds, Capabilities: [['gpu']] }]
    }
    try {
      const c = await this.docker.createContainer({
        name: spec.name,
        Image: spec.image,
        Cmd: spec.cmd,
        WorkingDir: spec.workingDir,
        Env: spec.env,
        Labels: spec.labels,
        User: spec.user,
        Tty: false,
        OpenStdin: false,
        AttachStdout: true,
        AttachStderr: true,
        HostConfig: hostConfig,
      })
      return c.id
    } catch (err) {
      throw dockerError(`cannot create container for ${spec.image}`, err)
    }
  }

  async attach(id: string): Promise<ContainerOutput> {
    let raw: NodeJS.ReadableStream
    try {
      raw = (await this.docker.getContainer(id).attach({ stream: true, stdout: true, stderr: true, logs: true })) as NodeJS.ReadableStream
    } catch (err) {
      throw dockerError('cannot attach to container', err)
    }
    return this.#demux(raw)
  }

  async follow(id: string, tail: number): Promise<ContainerOutput> {
    let raw: NodeJS.ReadableStream
    try {
      raw = (await this.docker.getContainer(id).logs({ follow: true, stdout: true, stderr: true, tail })) as unknown as NodeJS.ReadableStream
    } catch (err) {
      throw dockerError('cannot follow the container\'s output', err)
    }
    return this.#demux(raw)
  }

  #demux(raw: NodeJS.ReadableStream): ContainerOutput {
    const stdout = new PassThrough()
    const stderr = new PassThrough()
    this.docker.modem.demuxStream(raw, stdout, stderr)
    const ended = finished(raw).then(
      () => undefined,
      () => undefined,
    ).finally(() => {
      stdout.end()
      stderr.end()
    })
    return { stdout, stderr, ended }
  }

  async start(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).start()
    } catch (err) {
      throw dockerError('cannot start container', err)
    }
  }

  async wait(id: string): Promise<ContainerExit> {
    const c = this.docker.getContainer(id)
    try {
      const r = (await c.wait()) as { StatusCode: number; Error?: { Message?: string } | null }
      const info = await c.inspect()
      return {
        exitCode: r.StatusCode,
        oomKilled: Boolean(info.State.OOMKilled),
        error: r.Error?.Message || info.State.Error || undefined,
      }
    } catch (err) {
      throw dockerError('lost the container while waiting for it', err)
    }
  }

  async stop(id: string, graceS: number): Promise<void> {
    try {
      await this.docker.getContainer(id).stop({ t: Math.ceil(graceS) })
    } catch (err) {
      const code = (err as { statusCode?: number }).statusCode
      if (code === 304 || code === 404) return // already stopped or gone
      throw dockerError('cannot stop container', err)
    }
  }

  async remove(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true })
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return
      throw dockerError('cannot remove container', err)
    }
  }

  async inspectContainer(idOrName: string): Promise<ContainerDetails | undefined> {
    try {
      const info = await this.docker.getContainer(idOrName).inspect()
      const started = Date.parse(info.State.StartedAt)
      return {
        id: info.Id,
        name: info.Name.replace(/^\//, ''),
        mounts: (info.Mounts ?? []).map((m) => ({ type: m.Type, source: m.Source, destination: m.Destination, name: m.Name })),
        labels: info.Config.Labels ?? {},
        state: {
          status: info.State.Status,
          running: info.State.Running,
          exitCode: info.State.ExitCode,
          oomKilled: Boolean(info.State.OOMKilled),
          error: info.State.Error || undefined,
          // Docker says 0001-01-01T00:00:00Z for a container that never started.
          startedMs: started > 0 ? started : undefined,
        },
      }
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined
      throw dockerError(`cannot inspect container ${idOrName}`, err)
    }
  }

  async listByLabel(label: string, value?: string): Promise<ContainerSummary[]> {
    let list: Docker.ContainerInfo[]
    try {
      list = await this.docker.listContainers({ all: true, filters: { label: [value === undefined ? label : `${label}=${value}`] } })
    } catch (err) {
      throw dockerError('cannot list containers', err)
    }
    return list.map((c) => ({ id: c.Id, name: (c.Names[0] ?? '').replace(/^\//, ''), state: c.State, labels: c.Labels, createdMs: c.Created * 1000 }))
  }
}

import type { Readable } from 'node:stream'
import Docker from 'dockerode'
import { demux } from './demux.js'
import { dockerOptions } from './docker-host.js'
import { dockerError, pullImage } from './image-pull.js'
import {
  type ContainerClient,
  type ContainerDetails,
  type ContainerExit,
  type ContainerOutput,
  type ContainerSpec,
  type ContainerSummary,
  type PullProgress,
} from './container-client.js'

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
      const done = pullImage(this.docker, image, this.pullStallMs, (p) => listeners.forEach((l) => l(p))).finally(() => this.#pulls.delete(image))
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
    let used = false
    return {
      read(onData) {
        if (used) throw new Error('container output is read once')
        used = true
        return demux(raw as Readable, onData)
      },
    }
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

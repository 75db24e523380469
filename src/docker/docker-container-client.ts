import type { Readable } from 'node:stream'
import type DockerTypes from 'dockerode'
import { Docker } from './dockerode.js'
import { demux } from './demux.js'
import { dockerOptions } from './docker-host.js'
import { connectionHint, startHint } from './hints.js'
import { dockerError } from './image-pull.js'
import { ImagePuller } from './image-puller.js'
import {
  type ContainerClient,
  type ContainerDetails,
  type ContainerExit,
  type ContainerOutput,
  type ContainerSpec,
  type ContainerSummary,
  type ContainerUsage,
  type EnsureImageOptions,
  type ImageStatus,
} from './container-client.js'

export interface DockerClientOptions {
  /** A pull that shows no progress for this long is cancelled (ms, default 5 minutes). */
  pullStallMs?: number
  /** How often a pull's progress is logged and shown (ms, default 5 s). */
  pullProgressIntervalMs?: number
  /** The folder of the Docker config with registry credentials (default $DOCKER_CONFIG, else ~/.docker). */
  dockerConfigDir?: string
  /** For DOCKER_CONFIG, HOME and the credential helpers' PATH (default process.env). */
  env?: NodeJS.ProcessEnv
  /** Told when an image pull ends (src/metrics.ts). */
  onPulled?: (ok: boolean, seconds: number, bytes: number) => void
}

/** The ContainerClient over dockerode: dockerode's types stop here. */
export class DockerContainerClient implements ContainerClient {
  readonly docker: Docker
  #images: ImagePuller

  /** A pull that shows no progress for this long is cancelled (ms). */
  readonly pullStallMs: number

  constructor(dockerHost?: string, opts: DockerClientOptions = {}) {
    this.docker = new Docker(dockerOptions(dockerHost))
    this.pullStallMs = opts.pullStallMs ?? 300_000
    this.#images = new ImagePuller(this.docker, {
      pullStallMs: this.pullStallMs,
      progressIntervalMs: opts.pullProgressIntervalMs,
      auth: { configDir: opts.dockerConfigDir, env: opts.env },
      onPulled: opts.onPulled,
    })
  }

  async ping(): Promise<void> {
    try {
      await this.docker.ping()
    } catch (err) {
      throw unreachable(err)
    }
  }

  async engine(): Promise<{ name: string; runtimes: string[] }> {
    try {
      const info = (await this.docker.info()) as { Name?: string; Runtimes?: Record<string, unknown> }
      return { name: info.Name ?? '', runtimes: Object.keys(info.Runtimes ?? {}) }
    } catch (err) {
      throw unreachable(err)
    }
  }

  ensureImage(image: string, opts?: EnsureImageOptions): Promise<void> {
    return this.#images.ensure(image, opts)
  }

  imageStatus(image: string, opts?: Pick<EnsureImageOptions, 'onWarning'>): Promise<ImageStatus> {
    return this.#images.status(image, opts)
  }

  async create(spec: ContainerSpec): Promise<string> {
    const hostConfig: DockerTypes.HostConfig = {
      Binds: spec.binds,
      ShmSize: spec.shmSizeBytes,
      Memory: spec.memoryBytes,
      NanoCpus: spec.nanoCpus,
      NetworkMode: spec.networkMode,
      SecurityOpt: ['no-new-privileges'],
      Init: spec.init,
      IpcMode: spec.ipcMode,
      Ulimits: spec.ulimits?.map((u) => ({ Name: u.name, Soft: u.soft, Hard: u.hard })),
      // json-file, whatever the daemon's default: FGMachine reads a taken-up container's output back through it.
      LogConfig: spec.log && { Type: 'json-file', Config: { 'max-size': String(spec.log.maxBytes), 'max-file': String(spec.log.maxFiles) } },
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
      // The stream alone, as `docker run` attaches: Docker wires it before it answers, so
      // nothing written after the start is missed. Asking for the logs too (logs=1) replays
      // the log file after that, and what the program wrote in between came twice.
      raw = (await this.docker.getContainer(id).attach({ stream: true, stdout: true, stderr: true, logs: false })) as NodeJS.ReadableStream
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
      const e = dockerError('cannot start container', err)
      const hint = startHint(e.message)
      if (hint) e.message += `. ${hint}`
      throw e
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
      const finished = Date.parse(info.State.FinishedAt)
      return {
        id: info.Id,
        name: info.Name.replace(/^\//, ''),
        mounts: (info.Mounts ?? []).map((m) => ({ type: m.Type, source: m.Source, destination: m.Destination, name: m.Name })),
        labels: info.Config.Labels ?? {},
        ...(info.HostConfig?.Memory && { memoryLimitBytes: info.HostConfig.Memory }),
        state: {
          status: info.State.Status,
          running: info.State.Running,
          exitCode: info.State.ExitCode,
          oomKilled: Boolean(info.State.OOMKilled),
          error: info.State.Error || undefined,
          // Docker says 0001-01-01T00:00:00Z for a container that never started.
          startedMs: started > 0 ? started : undefined,
          finishedMs: finished > 0 && !info.State.Running ? finished : undefined,
        },
      }
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined
      throw dockerError(`cannot inspect container ${idOrName}`, err)
    }
  }

  async stats(id: string): Promise<ContainerUsage | undefined> {
    let s: DockerStats
    try {
      // one-shot (API 1.41+): the reading now, without the second one Docker otherwise waits a second for.
      s = (await this.docker.getContainer(id).stats({ stream: false, 'one-shot': true })) as unknown as DockerStats
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined
      throw dockerError(`cannot read the resource use of container ${id}`, err)
    }
    return usageOf(s)
  }

  async listByLabel(label: string, value?: string): Promise<ContainerSummary[]> {
    let list: DockerTypes.ContainerInfo[]
    try {
      list = await this.docker.listContainers({ all: true, filters: { label: [value === undefined ? label : `${label}=${value}`] } })
    } catch (err) {
      throw dockerError('cannot list containers', err)
    }
    return list.map((c) => ({ id: c.Id, name: (c.Names[0] ?? '').replace(/^\//, ''), state: c.State, labels: c.Labels, createdMs: c.Created * 1000 }))
  }
}

/** "Docker is not reachable", with what to do about it when the socket error says. */
function unreachable(err: unknown) {
  const e = dockerError('Docker is not reachable', err)
  const hint = connectionHint(e.message)
  if (hint) e.message += `: ${hint}`
  return e
}

/** The part of Docker's stats answer FGMachine reads (cgroup v1 and v2 both). */
interface DockerStats {
  cpu_stats?: { cpu_usage?: { total_usage?: number } }
  memory_stats?: { usage?: number; stats?: Record<string, number | undefined> }
}

/**
 * CPU time and memory as `docker stats` shows them: memory is the usage less
 * the inactive page cache (cgroup v2 `inactive_file`, v1 `total_inactive_file`).
 * A stopped container answers zeros and an empty memory_stats: no usage then.
 */
export function usageOf(s: DockerStats): ContainerUsage | undefined {
  const cpu = s.cpu_stats?.cpu_usage?.total_usage
  const mem = s.memory_stats?.usage
  if (!cpu && mem === undefined) return undefined
  const inactive = s.memory_stats?.stats?.inactive_file ?? s.memory_stats?.stats?.total_inactive_file ?? 0
  return {
    cpuNs: typeof cpu === 'number' ? cpu : undefined,
    memoryBytes: typeof mem === 'number' ? (inactive < mem ? mem - inactive : mem) : undefined,
  }
}

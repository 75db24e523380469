import type { Logger } from 'pino'
import type { ContainerClient, ContainerSpec } from '../docker/container-client.js'
import { LABELS, gpusLabel } from '../docker/labels.js'
import { pumpText } from './pump.js'
import type { ExitInfo, LaunchSpec, RunHandle, Runtime } from './runtime.js'

/** Maps a path FGMachine sees to the path the Docker host sees (identity unless FGMachine runs in a container). */
export type HostPathMapper = (localPath: string) => string

/** Variables that choose GPUs: set by the allocation alone. */
const GPU_ENV = new Set(['NVIDIA_VISIBLE_DEVICES', 'CUDA_VISIBLE_DEVICES'])

/** Each experiment in a sibling container, its results folder bind-mounted at the same path. */
export class DockerRuntime implements Runtime {
  readonly kind = 'docker' as const

  constructor(
    private readonly docker: ContainerClient,
    private readonly log: Logger,
    private readonly hostPath: HostPathMapper = (p) => p,
  ) {}

  containerSpec(spec: LaunchSpec): ContainerSpec {
    const p = spec.project
    const labels: Record<string, string> = {
      [LABELS.managed]: 'true',
      [LABELS.experiment]: spec.experimentId,
      [LABELS.project]: p.id,
      [LABELS.machine]: spec.machineId ?? '',
      [LABELS.cpuUnits]: String(spec.lease.cpuUnits),
      [LABELS.gpus]: gpusLabel(spec.lease.gpus),
      [LABELS.results]: spec.resultsDir,
    }
    // The GPUs are the lease's and nobody else's: the project's env cannot widen them,
    // and a container without GPUs gets none even where nvidia is the default runtime.
    const env = Object.entries(spec.env).filter(([k]) => !GPU_ENV.has(k))
    if (spec.lease.gpus.length === 0) env.push(['NVIDIA_VISIBLE_DEVICES', 'void'])
    return {
      name: `fgmachine-${spec.experimentId}`,
      image: p.image!,
      cmd: p.command ? [p.command, ...spec.argv] : spec.argv,
      workingDir: p.cwd,
      env: env.map(([k, v]) => `${k}=${v}`),
      labels,
      binds: [`${this.hostPath(spec.resultsDir)}:${spec.resultsDir}`, ...p.volumes],
      shmSizeBytes: p.shm_size,
      memoryBytes: p.memory,
      nanoCpus: p.cpus === undefined ? undefined : Math.round(p.cpus * 1e9),
      networkMode: p.network,
      user: p.user,
      gpuDeviceIds: spec.lease.gpus.length ? spec.lease.gpus.map((g) => String(g.index)) : undefined,
    }
  }

  async launch(spec: LaunchSpec): Promise<RunHandle> {
    const image = spec.project.image!
    const log = this.log.child({ experimentId: spec.experimentId })
    let lastStatus = ''
    await this.docker.ensureImage(image, (p) => {
      const line = `${p.status}${p.id ? ' ' + p.id : ''}`
      log.info({ image, status: p.status, layer: p.id, progress: p.progress }, 'pulling image')
      if (p.status !== lastStatus && !p.progress) spec.status(`[fgmachine] ${image}: ${line}\n`)
      lastStatus = p.status
    })
    const cs = this.containerSpec(spec)
    const id = await this.docker.create(cs)
    let disposed = false
    const dispose = async () => {
      if (disposed) return
      disposed = true
      await this.docker.remove(id)
    }
    try {
      const out = await this.docker.attach(id)
      const pumped = Promise.all([pumpText(out.stdout, (t) => spec.output('stdout', t)), pumpText(out.stderr, (t) => spec.output('stderr', t))])
      await this.docker.start(id)
      log.info({ containerId: id.slice(0, 12), image, gpus: cs.gpuDeviceIds }, 'container started')
      const exited = this.docker.wait(id).then(
        async (exit): Promise<ExitInfo> => {
          await Promise.race([Promise.all([out.ended, pumped]), new Promise((r) => setTimeout(r, 5000).unref())])
          // From the container's state, not from exit code 137, which any SIGKILL gives.
          const error = exit.oomKilled ? 'out of memory: the container reached its memory limit and was killed' : exit.error
          return { exitCode: exit.exitCode, oomKilled: exit.oomKilled, error }
        },
        (err: Error): ExitInfo => ({ exitCode: null, error: err.message }),
      )
      return {
        exited,
        stop: (graceMs) => this.docker.stop(id, graceMs / 1000),
        dispose,
      }
    } catch (err) {
      await dispose().catch(() => undefined)
      throw err
    }
  }
}

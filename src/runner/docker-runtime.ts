import type { Logger } from 'pino'
import {
  DockerError,
  noSuchImage,
  type ContainerClient,
  type ContainerDetails,
  type ContainerOutput,
  type ContainerSpec,
  type ContainerSummary,
  type ContainerUsage,
  type PullPolicy,
} from '../docker/container-client.js'
import { describePull, logPull } from '../docker/pull-progress.js'
import { LABELS, runLabels } from '../docker/labels.js'
import { Utf8Chunks } from '../logs/utf8-chunks.js'
import type { Metrics } from '../metrics.js'
import { realClock, type Clock } from '../util/clock.js'
import { backoffDelay } from '../util/retry.js'
import { KilledBeforeStartError, type ExitInfo, type LaunchSpec, type RunHandle, type Runtime } from './runtime.js'

/** Maps a path FGMachine sees to the path the Docker host sees (identity unless FGMachine runs in a container). */
export type HostPathMapper = (localPath: string) => string

/**
 * How long to watch Docker after a container was killed by a signal nobody
 * here sent, to tell a daemon shutting down (it stops its containers, then
 * exits) from a `docker kill` by hand.
 */
const DAEMON_EXIT_WINDOW_MS = 10_000

/** Variables that choose GPUs: set by the allocation alone. */
const GPU_ENV = new Set(['NVIDIA_VISIBLE_DEVICES', 'CUDA_VISIBLE_DEVICES'])

/** Each experiment in a sibling container, its results folder bind-mounted at the same path. */
export class DockerRuntime implements Runtime {
  readonly kind = 'docker' as const
  /** Containers FGMachine itself is stopping (kill, timeout): their signal exit is no mystery. */
  #stopped = new Set<string>()

  constructor(
    private readonly docker: ContainerClient,
    private readonly log: Logger,
    private readonly hostPath: HostPathMapper = (p) => p,
    /** Aborted when FGMachine shuts down: stops waiting for a lost Docker. */
    private readonly shutdown?: AbortSignal,
    /** How Docker is told which GPU a lease's index means: its UUID where known (see machine.ts). */
    private readonly gpuDeviceId: (index: number) => string = String,
    private readonly clock: Clock = realClock,
    /** This FGMachine's data folder as the Docker host sees it (labels.ts `data`), once known. */
    readonly dataKey: () => string | undefined = () => undefined,
    /** Times container starts (fgmachine_container_start_seconds). */
    private readonly metrics?: Pick<Metrics, 'containerStart'>,
  ) {}

  containerSpec(spec: LaunchSpec): ContainerSpec {
    const p = spec.project
    const labels = runLabels(
      { id: spec.experimentId, projectId: p.id, lease: spec.lease, resultsDir: spec.resultsDir, keepResults: p.keep_results, timeoutS: p.timeout, charts: p.system_charts ? undefined : false },
      spec.machineId,
      this.dataKey(),
    )
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
      gpuDeviceIds: spec.lease.gpus.length ? spec.lease.gpus.map((g) => this.gpuDeviceId(g.index)) : undefined,
      init: p.init,
      ipcMode: p.ipc,
      ulimits: p.ulimits && Object.entries(p.ulimits).map(([name, u]) => ({ name, ...u })),
      log: { maxBytes: p.log.max_size, maxFiles: p.log.max_files },
    }
  }

  async launch(spec: LaunchSpec): Promise<RunHandle> {
    const image = spec.project.image!
    const log = this.log.child({ experimentId: spec.experimentId })
    const policy: PullPolicy = spec.project.pull ?? 'missing'
    // Killed before or while its image is pulled: ensureImage stops waiting (with
    // KilledBeforeStartError, the signal's reason), and no container is made.
    const ensureImage = async () => {
      await this.docker.ensureImage(image, {
        policy,
        signal: spec.killed,
        // One line every few seconds, summed over the layers, in the log (once for all
        // the starts that share the pull) and in this experiment's live output.
        onProgress: (p) => {
          logPull(this.log, p)
          spec.status(`[fgmachine] ${describePull(p)}\n`)
        },
        onWarning: (message) => {
          log.warn({ image, problem: message }, 'cannot read the registry credentials')
          spec.status(`[fgmachine] warning: ${message}\n`)
        },
      })
      if (spec.killed.aborted) throw new KilledBeforeStartError()
    }
    const cs = this.containerSpec(spec)
    if (spec.killed.aborted) throw new KilledBeforeStartError()
    let startedAt = this.clock.now()
    // The image is almost always here: made at once, and pulled only when Docker says it has
    // no such image, as the docker CLI does (one request less on every start). `always` pulls first.
    let id =
      policy === 'always'
        ? undefined
        : await this.docker.create(cs).catch((err: unknown) => {
            if (noSuchImage(err)) return undefined
            throw err
          })
    if (id === undefined) {
      await ensureImage()
      startedAt = this.clock.now()
      id = await this.docker.create(cs)
    }
    let disposed = false
    const dispose = async () => {
      if (disposed) return
      disposed = true
      await this.docker.remove(id)
    }
    try {
      const out = await this.docker.attach(id)
      const pumped = this.#pump(out, spec)
      await this.docker.start(id)
      this.metrics?.containerStart.observe(Math.max(0, this.clock.now() - startedAt) / 1000)
      log.info({ containerId: id.slice(0, 12), image, gpus: cs.gpuDeviceIds }, 'container started')
      return this.#handle(id, this.#watch(id, pumped, spec), dispose)
    } catch (err) {
      await dispose().catch(() => undefined)
      throw err
    }
  }

  /**
   * Take up a container that was running before FGMachine restarted: its last
   * `tail` lines of output first (for the live log's backlog), then what comes.
   */
  async reattach(containerId: string, spec: Pick<LaunchSpec, 'experimentId' | 'output' | 'status'>, tail = 1000): Promise<RunHandle> {
    const out = await this.docker.follow(containerId, tail)
    const pumped = this.#pump(out, spec)
    this.log.info({ experimentId: spec.experimentId, containerId: containerId.slice(0, 12) }, 'container re-adopted')
    return this.#handle(containerId, this.#watch(containerId, pumped, spec), () => this.docker.remove(containerId))
  }

  #handle(id: string, exited: Promise<ExitInfo>, dispose: () => Promise<void>): RunHandle {
    return {
      containerId: id,
      exited,
      stop: (graceMs) => {
        this.#stopped.add(id)
        return this.docker.stop(id, graceMs / 1000)
      },
      dispose: async () => {
        this.#stopped.delete(id)
        await dispose()
      },
    }
  }

  /** An experiment's container: by the id the journal kept, else by its label. Undefined when there is none. */
  async find(experimentId: string, containerId?: string): Promise<ContainerDetails | undefined> {
    if (containerId) {
      const c = await this.docker.inspectContainer(containerId)
      if (c) return c
    }
    const [summary] = await this.docker.listByLabel(LABELS.experiment, experimentId)
    return summary ? this.docker.inspectContainer(summary.id) : undefined
  }

  /**
   * The containers labelled with this machine's FGLab id or its data folder:
   * its own, those its data folder made under an id it had before, and those
   * of another FGMachine claiming its id (see labels.ts `ownership`).
   */
  async listOurs(machineId: string): Promise<ContainerSummary[]> {
    const dataKey = this.dataKey()
    const [byId, byData] = await Promise.all([
      this.docker.listByLabel(LABELS.machine, machineId),
      dataKey ? this.docker.listByLabel(LABELS.data, dataKey) : Promise.resolve([]),
    ])
    const seen = new Set(byId.map((c) => c.id))
    return [...byId, ...byData.filter((c) => !seen.has(c.id))]
  }

  remove(containerId: string): Promise<void> {
    return this.docker.remove(containerId)
  }

  /** What a running container has used (for its system chart). */
  stats(containerId: string): Promise<ContainerUsage | undefined> {
    return this.docker.stats(containerId)
  }

  /** A handle on a container that is not followed: only to remove it. */
  handleFor(containerId: string): RunHandle {
    return this.#handle(containerId, new Promise<ExitInfo>(() => {}), () => this.docker.remove(containerId))
  }

  /** Hand the container's output on, each stream in pieces that end on whole UTF-8 characters. */
  #pump(out: ContainerOutput, spec: Pick<LaunchSpec, 'output'>): Promise<void> {
    const chunks = { stdout: new Utf8Chunks(), stderr: new Utf8Chunks() }
    return out
      .read((stream, data) => {
        const whole = chunks[stream].push(data)
        if (whole) spec.output(stream, whole)
      })
      .finally(() => {
        for (const stream of ['stdout', 'stderr'] as const) {
          const rest = chunks[stream].end()
          if (rest) spec.output(stream, rest)
        }
      })
  }

  /**
   * Wait for the container to end. If Docker goes away meanwhile (the daemon
   * restarts, the socket disappears), wait for it to come back and look again:
   * still running → follow it again; ended → how; gone → say so.
   */
  async #watch(id: string, pumped: Promise<void>, spec: Pick<LaunchSpec, 'experimentId' | 'output' | 'status'>): Promise<ExitInfo> {
    const log = this.log.child({ experimentId: spec.experimentId, containerId: id.slice(0, 12) })
    let output = pumped
    let lostDocker = false
    for (;;) {
      try {
        const exit = await this.docker.wait(id)
        // The output's end follows the exit; not forever if a child the program left holds it open.
        const late = new AbortController()
        await Promise.race([output, this.clock.sleep(5000, late.signal).catch(() => undefined)])
        late.abort()
        // Killed by a signal nobody here sent: a daemon shutting down stops its containers
        // so, and goes away a moment later. Look whether it is still there.
        if (!lostDocker && !exit.oomKilled && (exit.exitCode === 137 || exit.exitCode === 143) && !this.#stopped.has(id)) {
          if (await this.#goesAway(DAEMON_EXIT_WINDOW_MS)) {
            lostDocker = true
            log.warn('Docker went away as the container ended: the daemon stopped it; waiting for Docker to come back')
            // Back before the container can be removed.
            await this.#dockerBack().catch(() => undefined)
          } else {
            // Docker may learn of an OOM kill after the exit itself (its events come apart): ask again.
            const again = await this.docker.inspectContainer(id).catch(() => undefined)
            if (again?.state.oomKilled) exit.oomKilled = true
          }
        }
        // From the container's state, not from exit code 137, which any SIGKILL gives.
        let error = exit.oomKilled ? 'out of memory: the container reached its memory limit and was killed' : exit.error
        if (lostDocker && !error && exit.exitCode !== 0) error = 'the Docker daemon stopped or restarted while it ran'
        return { exitCode: exit.exitCode, oomKilled: exit.oomKilled, error }
      } catch (err) {
        if (!(err instanceof DockerError) || !err.unreachable) {
          return { exitCode: null, error: (err as { statusCode?: number }).statusCode === 404 ? 'its container was removed outside FGMachine' : (err as Error).message }
        }
      }
      if (!lostDocker) {
        log.warn('lost the connection to Docker while the experiment ran; waiting for Docker to come back')
        spec.status('[fgmachine] lost the connection to Docker; waiting for it to come back\n')
      }
      lostDocker = true
      try {
        await this.#dockerBack()
      } catch {
        return { exitCode: null, error: 'FGMachine stopped while Docker was unreachable' }
      }
      let details
      try {
        details = await this.docker.inspectContainer(id)
      } catch {
        continue // lost it again: wait again
      }
      if (!details) {
        log.warn('the container is gone after Docker came back')
        return { exitCode: null, error: 'its container is gone: it died with the Docker daemon' }
      }
      log.info({ running: details.state.running }, 'Docker is back')
      if (details.state.running) {
        const out = await this.docker.follow(id, 0).catch(() => undefined)
        if (out) output = this.#pump(out, spec)
      }
    }
  }

  /** Whether Docker stops answering within `windowMs` (a daemon shutting down, after it stopped its containers). */
  async #goesAway(windowMs: number): Promise<boolean> {
    const until = this.clock.now() + windowMs
    while (this.clock.now() < until) {
      await this.clock.sleep(250)
      if (!(await this.docker.ping().then(() => true, () => false))) return true
    }
    return false
  }

  /** Resolves when Docker answers again; rejects when FGMachine shuts down first. */
  async #dockerBack(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      this.shutdown?.throwIfAborted()
      try {
        await this.docker.ping()
        return
      } catch {
        await this.clock.sleep(backoffDelay(attempt, { baseMs: 500, maxMs: 10_000 }), this.shutdown)
      }
    }
  }
}

import os from 'node:os'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { buildApp } from './app.js'
import { loadTemplate, type Config } from './config.js'
import type { ContainerClient } from './docker/container-client.js'
import { DockerContainerClient } from './docker/docker-container-client.js'
import { prepareImages } from './docker/prepare-images.js'
import { checkDataIdentity, dataKeyOf } from './docker/data-identity.js'
import { detectHostPaths, HostPaths } from './docker/host-paths.js'
import { FglabClient } from './fglab/client.js'
import { Delivery } from './fglab/delivery.js'
import { Outbox } from './fglab/outbox.js'
import { Registration } from './fglab/registration.js'
import { machineSpecs } from './fglab/specs.js'
import { LogHub } from './logs/log-hub.js'
import { Metrics } from './metrics.js'
import { reviewProjects } from './projects/review.js'
import { parseProjects } from './projects/schema.js'
import { ProjectStore } from './projects/store.js'
import { DockerRuntime } from './runner/docker-runtime.js'
import { ExperimentManager } from './runner/experiment-manager.js'
import { ProcessRuntime } from './runner/process-runtime.js'
import { Scheduler } from './scheduler/scheduler.js'
import { realSleep, retry, type Backoff, type Sleep } from './util/retry.js'
import { Journal } from './runner/journal.js'
import { Ledgers } from './results/ledger.js'
import { realClock } from './util/clock.js'
import { DiskHealth, nodeDisk, type Disk } from './util/disk.js'
import { discoverGpus, UNKNOWN_UUID_PREFIX, type NvidiaSmi } from './gpu/discovery.js'
import type { GpuDevice } from './gpu/nvidia-smi.js'
import { SystemCharts } from './sysstats/charts.js'
import { timedClient } from './docker/timed-client.js'
import { GpuReader } from './sysstats/sources.js'

export interface MachineOptions {
  log: Logger
  /** A ContainerClient other than dockerode over DOCKER_HOST (tests). */
  containerClient?: ContainerClient
  /** Retry timing for FGLab calls (tests make it fast). */
  backoff?: Backoff
  sleep?: Sleep
  /** How often the projects are sent to FGLab although unchanged, to notice a machine deleted there (ms; default 5 min). */
  registrationRefreshMs?: number
  resultsStableMs?: number
  /** Containers labelled for this machine that belong to no experiment it knows are removed once older than this (ms). */
  orphanGraceMs?: number
  /** Told of what must stop FGMachine after it started (a copied data folder found late). */
  onFatal?: (err: Error) => void
  /** How nvidia-smi is run (tests put a stand-in here or on PATH). */
  nvidiaSmi?: NvidiaSmi
  /** The disk FGMachine's own state is written to (tests: one that fills up); the real one by default. */
  disk?: Disk
  /** How often a data folder that refused a write is tried again (DISK_PROBE_EVERY_MS). */
  diskProbeMs?: number
}

export interface Machine {
  app: FastifyInstance
  projects: ProjectStore
  scheduler: Scheduler
  experiments: ExperimentManager
  registration: Registration
  outbox: Outbox
  logHub: LogHub
  gpus: GpuDevice[]
  /** FGMachine's metrics, on a registry of its own (`GET /metrics`). */
  metrics: Metrics
  /** Listen on the configured host and port; returns the address. */
  listen(): Promise<string>
  /** Stop accepting work and let go of everything; containers run on, local processes are stopped. */
  close(): Promise<void>
}

/** Wire every service from the configuration. Nothing listens and nothing runs until `listen()`. */
export async function createMachine(config: Config, opts: MachineOptions): Promise<Machine> {
  const log = opts.log
  const gpus = await discoverGpus({ log: log.child({ component: 'gpus' }), override: config.gpus, nvidiaSmi: opts.nvidiaSmi })
  // A registry of FGMachine's own, never prom-client's global one: two machines in one process (tests) count apart.
  const metrics = new Metrics()
  const client = new FglabClient({ url: config.fglabUrl, onRequest: (call, seconds, err) => metrics.fglabRequested(call, seconds, err) })
  // The name FGLab shows: inside a container, the host's (from Docker) rather than the container's id.
  let hostname = config.hostname ?? os.hostname()
  const registration = new Registration({
    client,
    log: log.child({ component: 'registration' }),
    specsFile: path.join(config.dataDir, 'specs.json'),
    specs: () => machineSpecs(config.machineUrl, gpus, hostname),
    backoff: opts.backoff,
    sleep: opts.sleep,
    refreshMs: opts.registrationRefreshMs,
    // Containers this data folder started under an id it no longer has (specs.json lost) are looked for at once.
    onRegistered: () => reconcileNow(),
    onConflict: (reason) => experiments.identityConflict(reason),
  })
  let reconcileNow = () => {}
  // Every write of FGMachine's state goes through it: one refused by a full or read-only
  // data folder turns starts and capacity into refusals that say so, until it takes writes again.
  const diskHealth = new DiskHealth(opts.disk ?? nodeDisk, { dir: config.dataDir, probeEveryMs: opts.diskProbeMs, log: log.child({ component: 'disk' }) })
  const disk = diskHealth.disk
  const clock = realClock
  const outboxLog = log.child({ component: 'outbox' })
  const ledgers = new Ledgers(disk, path.join(config.dataDir, 'experiments'), outboxLog)
  const delivery = new Delivery(client, outboxLog, { backoff: opts.backoff, sleep: opts.sleep, metrics })
  const outbox = new Outbox({
    dir: path.join(config.dataDir, 'outbox'),
    disk,
    client,
    delivery,
    ledgers,
    log: outboxLog,
    maxBytes: config.outboxMaxBytes,
    maxFileBytes: config.maxFileBytes,
  })
  const journal = new Journal(disk, path.join(config.dataDir, 'experiments'), log.child({ component: 'journal' }))
  const stopping = new AbortController()
  const template = loadTemplate(config.templatePath)
  // A template is written as it is by "Add to Machine": one that could never load is said now, not then.
  for (const p of template ? parseProjects({ template }, process.cwd()).problems : []) {
    log.warn({ file: config.templatePath, field: p.field, reason: p.message }, `FGMACHINE_TEMPLATE: the entry "Add to Machine" writes will be left out until edited: ${p.field ? `${p.field}: ` : ''}${p.message}`)
  }
  const projects = new ProjectStore(config.projectsPath, log.child({ component: 'projects' }), process.cwd(), template)
  const scheduler = new Scheduler(gpus.map((g) => g.index))
  const logHub = new LogHub()
  const docker = timedClient(
    opts.containerClient ?? new DockerContainerClient(config.dockerHost, { pullStallMs: config.pullStallMs, onPulled: (ok, seconds, bytes) => metrics.pulled(ok, seconds, bytes) }),
    (op, seconds, ok) => metrics.dockerRequested(op, seconds, ok),
  )
  metrics.observe({ scheduler, outbox })
  // Known once listen() has looked; until then paths are the host's. The data key goes with them.
  let hostPaths = HostPaths.onHost
  let dataKey = dataKeyOf(config.dataDir, hostPaths)
  /** Docker told FGMachine its mounts: the data folder's identity is checked before anything is read from it. */
  const adopt = async (found: HostPaths): Promise<void> => {
    hostPaths = found
    dataKey = dataKeyOf(config.dataDir, found)
    if (dataKey) await checkDataIdentity(config.dataDir, dataKey)
  }
  projects.addCheck((p) => {
    const problem = p.image ? hostPaths.problem(p.resultsDir, 'results') : undefined
    return problem ? { field: 'results', message: problem } : undefined
  })
  const chartsLog = log.child({ component: 'system-charts' })
  const system =
    config.sampleMs > 0
      ? new SystemCharts({
          dir: path.join(config.dataDir, 'experiments'),
          disk,
          log: chartsLog,
          clock,
          gpus: gpus.length ? new GpuReader(chartsLog, clock, Math.max(1000, Math.min(config.sampleMs, 5000) / 2), opts.nvidiaSmi) : undefined,
          sampleMs: config.sampleMs,
          chartEveryMs: config.chartEveryMs,
        })
      : undefined
  const experiments = new ExperimentManager({
    scheduler,
    logHub,
    outbox,
    ledgers,
    journal,
    runtimes: {
      docker: new DockerRuntime(docker, log.child({ component: 'docker' }), (p) => hostPaths.toHost(p) ?? p, stopping.signal, gpuDeviceId(gpus), clock, () =>
        dataKey,
        metrics,
      ),
      process: new ProcessRuntime(),
    },
    log: log.child({ component: 'experiments' }),
    clock,
    machineId: () => registration.machineId,
    killGraceMs: config.killGraceMs,
    resultsStableMs: opts.resultsStableMs,
    diskHealth,
    metrics,
    system,
  })
  const app = await buildApp(
    {
      projects,
      scheduler,
      experiments,
      logHub,
      gpus,
      machineUrl: config.machineUrl,
      machineId: () => registration.machineId,
      hostname: () => hostname,
      health: { docker: () => docker.ping(), fglab: () => client.ping(), registration: () => registration.health() },
      metrics: metrics.registry,
    },
    { logger: log, token: config.token },
  )

  let started = false
  let reconciling: NodeJS.Timeout | undefined
  return {
    app,
    projects,
    scheduler,
    experiments,
    registration,
    outbox,
    logHub,
    gpus,
    metrics,
    async listen() {
      const dockerLog = log.child({ component: 'docker' })
      warnUnreachableUrl(config, log)
      // Before anything is read from it: a copied data folder must not act as the machine it was copied from.
      await adopt(await detectHostPaths(docker, dockerLog))
      const engine = await docker.engine().catch((err: Error) => err)
      hostname = machineName(config.hostname, hostPaths.inContainer, engine instanceof Error ? undefined : engine.name)
      if (hostPaths.undetermined) {
        // Docker did not answer: container projects are refused until it tells FGMachine its mounts.
        void retry(
          async () => {
            const found = await detectHostPaths(docker, dockerLog)
            if (found.undetermined) throw new Error(found.undetermined)
            // The check skipped at start, Docker being away then: a copy found now stops here.
            await adopt(found).catch((err: Error) => opts.onFatal?.(err))
            await projects.reload({ force: true })
          },
          { baseMs: 2000, maxMs: 30_000, signal: stopping.signal, sleep: realSleep, retryable: () => true },
        ).catch(() => {})
      }
      // A data folder already full, or read-only, is known before the first start is asked for.
      await diskHealth.probe()
      await registration.start()
      projects.on('change', (raw) => {
        registration.updateProjects(raw)
        for (const w of reviewProjects(projects.all(), { gpus: gpus.length, hostPaths })) log.warn({ projectId: w.projectId }, w.message)
        // Images that are missing and cannot be pulled are said now; `prepull` ones are pulled now.
        void prepareImages(projects.all(), docker, dockerLog)
      })
      await projects.reload()
      await projects.watch()
      // Before the first request: reports left unsent, experiments left running.
      await outbox.restore()
      await experiments.recover()
      checkDocker(engine, projects, log)
      // Under every id FGLab knew this machine by (a container keeps the id it was started under),
      // the current one last: its check for another FGMachine claiming it is the one that stands.
      const reconcile = () =>
        void (async () => {
          for (const id of registration.machineIds.reverse()) await experiments.reconcile(id, opts.orphanGraceMs ?? 60_000)
        })()
      reconcileNow = reconcile
      reconcile()
      // And now and then: a container whose removal failed is taken up (reported, removed) then.
      reconciling = setInterval(reconcile, 10 * 60_000)
      reconciling.unref()
      const address = await app.listen({ host: config.host, port: config.port })
      started = true
      log.info({ address, advertised: config.machineUrl, fglab: client.baseUrl }, 'FGMachine listening')
      return address
    },
    async close() {
      await app.close()
      await projects.close()
      // Inside `docker stop`'s 10 s: containers run on (taken up again after a restart);
      // local processes get a short grace, then a moment for their reports.
      const grace = Math.min(config.killGraceMs, 3000)
      stopping.abort()
      clearInterval(reconciling)
      if (started) {
        experiments.shutdown(grace)
        await Promise.race([experiments.idle(), realSleep(grace + 2000)])
      }
      await system?.close()
      registration.close()
      diskHealth.close()
      // What is still unsent stays on disk for the next start.
      outbox.close()
      // A start still pulling its image is not waited for: the journal says where it stands.
      await Promise.race([experiments.idle(), realSleep(1000)])
      await client.close()
    },
  }
}

/** Say at start what will not work: no Docker, or GPU projects on an engine without the NVIDIA runtime. */
function checkDocker(engine: { name: string; runtimes: string[] } | Error, projects: ProjectStore, log: Logger): void {
  if (engine instanceof Error) {
    log.warn({ reason: engine.message }, `${engine.message}; container projects fail until Docker answers`)
    return
  }
  const runtimes = engine.runtimes
  log.info({ runtimes, host: engine.name }, 'Docker is reachable')
  const gpuProjects = projects.all().filter((p) => p.image && p.gpu_capacity !== undefined)
  if (gpuProjects.length > 0 && !runtimes.includes('nvidia')) {
    log.warn(
      { projects: gpuProjects.map((p) => p.id), runtimes },
      'projects ask for GPUs but docker info shows no nvidia runtime: if the NVIDIA Container Toolkit is not installed, their containers will fail to start (could not select device driver "nvidia")',
    )
  }
}

/**
 * GPUs are named to Docker by UUID: an index is nvidia-smi's numbering where
 * FGMachine runs, which inside a container started with `--gpus device=2,3`
 * calls the host's GPUs 2 and 3 "0" and "1". GPUs declared by hand in
 * FGMACHINE_GPUS, whose UUIDs are unknown, go by index.
 */
function gpuDeviceId(gpus: readonly GpuDevice[]): (index: number) => string {
  const uuids = new Map(gpus.filter((g) => !g.uuid.startsWith(UNKNOWN_UUID_PREFIX)).map((g) => [g.index, g.uuid]))
  return (index) => uuids.get(index) ?? String(index)
}


const isLoopback = (host: string) => host === 'localhost' || host.endsWith('.localhost') || /^127\./.test(host) || host === '[::1]'

/** An FGMACHINE_URL on loopback while FGLab is elsewhere: FGLab (and browsers) cannot call this machine there. */
function warnUnreachableUrl(config: Config, log: Logger): void {
  const machine = new URL(config.machineUrl).hostname
  const fglab = new URL(config.fglabUrl).hostname
  if (isLoopback(machine) && !isLoopback(fglab)) {
    log.warn(
      { FGMACHINE_URL: config.machineUrl, FGLAB_URL: config.fglabUrl },
      `FGMACHINE_URL is a loopback address, but FGLab is at ${fglab}: FGLab cannot reach this machine there (it would see no capacity); set FGMACHINE_URL to this host's name or address as FGLab and browsers reach it, e.g. http://${os.hostname()}:${config.port}`,
    )
  }
}

/**
 * The name FGLab lists the machine under: FGMACHINE_HOSTNAME; else, in a
 * container (whose own name is its id), the host's as Docker knows it; else this host's.
 */
export function machineName(configured: string | undefined, inContainer: boolean, engineName: string | undefined): string {
  return configured ?? (inContainer && engineName ? engineName : os.hostname())
}

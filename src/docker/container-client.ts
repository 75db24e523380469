import type { PullProgress } from './pull-progress.js'

/** What FGMachine asks of Docker when it creates an experiment's container. */
export interface ContainerSpec {
  name: string
  image: string
  /** The container's command; undefined keeps the image's. Appended to the entrypoint. */
  cmd?: string[]
  workingDir?: string
  env: string[]
  labels: Record<string, string>
  /** `docker run -v` syntax, as written. */
  binds: string[]
  shmSizeBytes?: number
  memoryBytes?: number
  nanoCpus?: number
  networkMode?: string
  user?: string
  /** GPU device ids (host indices or UUIDs) for the NVIDIA device request. */
  gpuDeviceIds?: string[]
  /** Docker's init as PID 1 (`docker run --init`). */
  init?: boolean
  /** `docker run --ipc`. */
  ipcMode?: string
  /** `docker run --ulimit name=soft:hard` (-1: unlimited). */
  ulimits?: Array<{ name: string; soft: number; hard: number }>
  /** The container's own Docker log (json-file), rotated at this size and number of files. */
  log?: { maxBytes: number; maxFiles: number }
}

/** A container's output, read once: each piece of stdout or stderr to `onData` as it comes. */
export interface ContainerOutput {
  /** Resolves when Docker closed the output stream (the container ended, or Docker went away). */
  read(onData: (stream: 'stdout' | 'stderr', data: Buffer) => void): Promise<void>
}

export interface ContainerExit {
  exitCode: number
  oomKilled: boolean
  /** Docker's own error for the container, if any. */
  error?: string
}

export interface ContainerSummary {
  id: string
  name: string
  state: string
  labels: Record<string, string>
  /** When it was created (ms since the epoch). */
  createdMs: number
}

/** A mount of a container: a bind mount or a volume, as the host sees it. */
export interface ContainerMount {
  type: string
  /** The host's path (for a volume, its folder on the host). */
  source: string
  /** The path inside the container. */
  destination: string
  /** A volume's name. */
  name?: string
}

export interface ContainerState {
  /** Docker's status: created, running, paused, restarting, removing, exited, dead. */
  status: string
  running: boolean
  exitCode: number
  oomKilled: boolean
  error?: string
  /** When it started (ms since the epoch), if it did. */
  startedMs?: number
  /** When it ended (ms since the epoch), if it did. */
  finishedMs?: number
}

/** What a running container has used, as `docker stats` reads it; a value Docker did not give is absent. */
export interface ContainerUsage {
  /** CPU time used since it started, ns (cgroup cpuacct / cpu.stat). */
  cpuNs?: number
  /** Memory in use, bytes, less the reclaimable page cache (as `docker stats` shows it). */
  memoryBytes?: number
}

export interface ContainerDetails {
  id: string
  name: string
  mounts: ContainerMount[]
  labels: Record<string, string>
  state: ContainerState
  /** Its memory limit (`docker run --memory`), when it has one. */
  memoryLimitBytes?: number
}

export type { PullProgress } from './pull-progress.js'

/** projects.json's `pull`: pull only a missing image (default), or every time (like `docker run --pull`). */
export type PullPolicy = 'missing' | 'always'

export interface EnsureImageOptions {
  /** Default 'missing'. */
  policy?: PullPolicy
  /** The pull's progress, summed over its layers: at its start, every few seconds, at its end. */
  onProgress?: (p: PullProgress) => void
  /** What went wrong on the way that did not stop the pull (a Docker config that cannot be read). */
  onWarning?: (message: string) => void
  /** Aborting stops this caller's wait (with the signal's reason); the pull goes on for the others. */
  signal?: AbortSignal
}

/** Whether an image is here, or could be pulled, or why not (in words that say how to fix it). */
export type ImageStatus = 'present' | 'pullable' | { problem: string }

/** A Docker error, with the engine's status code when it answered. */
export class DockerError extends Error {
  override readonly name = 'DockerError'
  readonly code = 'FGM_DOCKER'
  constructor(
    message: string,
    readonly statusCode?: number,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }

  /** The engine did not answer at all (socket gone, daemon restarting), as opposed to answering with an error. */
  get unreachable(): boolean {
    return this.statusCode === undefined
  }
}

/** Docker's answer to a create whose image is not on the host (404 "No such image: …"): a pull is due, as the docker CLI does. */
export function noSuchImage(err: unknown): boolean {
  return err instanceof DockerError && err.statusCode === 404 && /no such image/i.test(err.message)
}

/**
 * The narrow seam between FGMachine and Docker: only what the domain needs.
 * The runner never sees dockerode; tests may put a fake here.
 */
export interface ContainerClient {
  /**
   * Make sure the image is present: pull it when it is missing, or every time
   * with the policy 'always'. Concurrent callers share one pull of an image.
   */
  ensureImage(image: string, opts?: EnsureImageOptions): Promise<void>
  /** Whether the image is here, or else whether its registry would let it be pulled (with the credentials a pull would use). */
  imageStatus(image: string, opts?: Pick<EnsureImageOptions, 'onWarning'>): Promise<ImageStatus>
  create(spec: ContainerSpec): Promise<string>
  /** Attach to the output before start, so that nothing written at once is missed: each byte written from now on, once (nothing the container wrote before). */
  attach(id: string): Promise<ContainerOutput>
  /** Follow a running container's output from now on, after the last `tail` lines it already wrote. */
  follow(id: string, tail: number): Promise<ContainerOutput>
  start(id: string): Promise<void>
  wait(id: string): Promise<ContainerExit>
  /** SIGTERM, then SIGKILL after `graceS`. */
  stop(id: string, graceS: number): Promise<void>
  remove(id: string): Promise<void>
  listByLabel(label: string, value?: string): Promise<ContainerSummary[]>
  /** A container by id or name; undefined when the engine does not know it. */
  inspectContainer(idOrName: string): Promise<ContainerDetails | undefined>
  /** What a container has used so far (one reading, no stream); undefined when it is not running or gone. */
  stats(id: string): Promise<ContainerUsage | undefined>
  ping(): Promise<void>
  /** `docker info`: the name of the engine's host, and the OCI runtimes it knows (e.g. runc, nvidia). */
  engine(): Promise<{ name: string; runtimes: string[] }>
}

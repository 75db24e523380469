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
}

export interface ContainerDetails {
  id: string
  name: string
  mounts: ContainerMount[]
  labels: Record<string, string>
  state: ContainerState
}

export interface PullProgress {
  status: string
  id?: string
  progress?: string
}

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

/**
 * The narrow seam between FGMachine and Docker: only what the domain needs.
 * The runner never sees dockerode; tests may put a fake here.
 */
export interface ContainerClient {
  /** Make sure the image is present, pulling it (with progress) when it is not. */
  ensureImage(image: string, onProgress?: (p: PullProgress) => void, signal?: AbortSignal): Promise<void>
  create(spec: ContainerSpec): Promise<string>
  /** Attach to the output before start, so that nothing written at once is missed. */
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
  ping(): Promise<void>
  /** The OCI runtimes the engine knows (`docker info`), e.g. runc, nvidia. */
  runtimes(): Promise<string[]>
}

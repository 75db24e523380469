import { randomBytes } from 'node:crypto'
import {
  DockerError,
  type ContainerClient,
  type ContainerDetails,
  type ContainerExit,
  type ContainerOutput,
  type ContainerSpec,
  type ContainerSummary,
  type ContainerUsage,
  type EnsureImageOptions,
  type ImageStatus,
  type PullProgress,
} from '../../src/docker/container-client.js'

type Stream = 'stdout' | 'stderr'

/** One container of the fake engine. */
export interface FakeContainer {
  id: string
  spec: ContainerSpec
  status: 'created' | 'running' | 'exited'
  exitCode: number
  oomKilled: boolean
  startedMs?: number
  createdMs: number
  /** Everything it wrote, in order (for `follow` with a tail). */
  output: Array<{ stream: Stream; data: Buffer }>
  listeners: Set<(stream: Stream, data: Buffer) => void>
  ended: Set<() => void>
  stopSignals: number
  /** What `stats` answers while it runs (a test sets it; default a little CPU and 1 MiB). */
  usage?: ContainerUsage
}

/** What a container does once started: the test's stand-in for the program in the image. */
export type Program = (c: FakeContainer, engine: FakeContainerClient) => void | Promise<void>

/**
 * An in-memory Docker engine behind the ContainerClient seam, for tests of
 * the runner without Docker. Programs are test functions (`program`) that
 * write output and end through `write` and `exit`. Fault hooks: `down` (the
 * engine unreachable: every call fails as a lost socket does), `failNext(op)`
 * (the next call of that operation fails with an engine error), `pullError`
 * (a pull that fails inside its progress stream; `imageStatus` gives it as the
 * problem), `ignoreStop`.
 */
export class FakeContainerClient implements ContainerClient {
  readonly containers = new Map<string, FakeContainer>()
  readonly images = new Set<string>()
  /** Every call, by operation name, in order. */
  readonly calls: string[] = []
  down = false
  program: Program = () => {}
  /** Images whose pull fails with this reason (as Docker says it in the progress stream). */
  readonly pullError = new Map<string, string>()
  /** How many times each image was pulled. */
  readonly pulls = new Map<string, number>()
  /** Containers that do not end on stop (their program handles SIGTERM itself). */
  ignoreStop = false
  /** Told of every call before it is made; what it throws is the call's error. */
  onCall: (op: string) => void = () => {}
  #failNext = new Map<string, Error>()
  #waits = new Map<string, Array<{ resolve: (e: ContainerExit) => void; reject: (err: Error) => void }>>()

  constructor(private readonly now: () => number = Date.now) {}

  failNext(op: keyof ContainerClient, err: Error = new DockerError(`${op} failed (fake)`, 500)): void {
    this.#failNext.set(op, err)
  }

  /** Make the engine go away: every call fails, and every wait is cut off, as when dockerd stops. */
  goDown(): void {
    this.down = true
    for (const [id, waiters] of this.#waits) {
      this.#waits.delete(id)
      for (const w of waiters) w.reject(new DockerError('lost the container while waiting for it: socket hang up'))
    }
    for (const c of this.containers.values()) for (const end of c.ended) end()
  }

  byExperiment(id: string): FakeContainer | undefined {
    return [...this.containers.values()].find((c) => c.spec.labels['fgmachine.experiment'] === id)
  }

  write(c: FakeContainer, stream: Stream, text: string | Buffer): void {
    const data = typeof text === 'string' ? Buffer.from(text) : text
    c.output.push({ stream, data })
    for (const l of c.listeners) l(stream, data)
  }

  exit(c: FakeContainer, code: number, opts: { oomKilled?: boolean } = {}): void {
    if (c.status !== 'running') return
    c.status = 'exited'
    c.exitCode = code
    c.oomKilled = Boolean(opts.oomKilled)
    for (const end of c.ended) end()
    c.ended.clear()
    for (const w of this.#waits.get(c.id) ?? []) w.resolve({ exitCode: code, oomKilled: c.oomKilled })
    this.#waits.delete(c.id)
  }

  async #call(op: string): Promise<void> {
    this.calls.push(op)
    await Promise.resolve()
    this.onCall(op)
    if (this.down) throw new DockerError(`${op}: connect ENOENT /var/run/docker.sock (fake engine down)`)
    const err = this.#failNext.get(op)
    if (err) {
      this.#failNext.delete(op)
      throw err
    }
  }

  #get(id: string): FakeContainer {
    const c = this.containers.get(id) ?? [...this.containers.values()].find((x) => x.spec.name === id)
    if (!c) throw new DockerError(`No such container: ${id}`, 404)
    return c
  }

  async ping(): Promise<void> {
    await this.#call('ping')
  }

  async engine(): Promise<{ name: string; runtimes: string[] }> {
    await this.#call('engine')
    return { name: 'fake-docker-host', runtimes: ['runc'] }
  }

  async ensureImage(image: string, opts: EnsureImageOptions = {}): Promise<void> {
    opts.signal?.throwIfAborted()
    await this.#call('ensureImage')
    if ((opts.policy ?? 'missing') === 'missing' && this.images.has(image)) return
    this.pulls.set(image, (this.pulls.get(image) ?? 0) + 1)
    const progress = (phase: PullProgress['phase']): PullProgress => ({
      image,
      phase,
      layers: 1,
      layersDone: phase === 'done' ? 1 : 0,
      layersCached: 0,
      downloadedBytes: phase === 'done' ? 1000 : 0,
      totalBytes: 1000,
      sizesKnown: true,
      percent: phase === 'done' ? 100 : 0,
      elapsedMs: 0,
    })
    const error = this.pullError.get(image)
    opts.onProgress?.(progress('downloading'))
    if (error) throw new DockerError(`cannot pull image ${image}: ${error}`)
    this.images.add(image)
    opts.onProgress?.(progress('done'))
  }

  async imageStatus(image: string): Promise<ImageStatus> {
    await this.#call('imageStatus')
    if (this.images.has(image)) return 'present'
    const error = this.pullError.get(image)
    return error ? { problem: error } : 'pullable'
  }

  async create(spec: ContainerSpec): Promise<string> {
    await this.#call('create')
    // As the engine answers a create for an image it does not have (the docker CLI then pulls).
    if (!this.images.has(spec.image)) throw new DockerError(`cannot create container for ${spec.image}: (HTTP code 404) no such container - No such image: ${spec.image}`, 404)
    if ([...this.containers.values()].some((c) => c.spec.name === spec.name)) throw new DockerError(`Conflict. The container name "/${spec.name}" is already in use`, 409)
    const id = randomBytes(32).toString('hex')
    this.containers.set(id, { id, spec, status: 'created', exitCode: 0, oomKilled: false, createdMs: this.now(), output: [], listeners: new Set(), ended: new Set(), stopSignals: 0 })
    return id
  }

  #output(c: FakeContainer, replay: Array<{ stream: Stream; data: Buffer }>): ContainerOutput {
    return {
      read: (onData) =>
        new Promise<void>((resolve) => {
          for (const o of replay) onData(o.stream, o.data)
          if (c.status === 'exited' || this.down) return resolve()
          const listener = (stream: Stream, data: Buffer) => onData(stream, data)
          c.listeners.add(listener)
          c.ended.add(() => {
            c.listeners.delete(listener)
            resolve()
          })
        }),
    }
  }

  async attach(id: string): Promise<ContainerOutput> {
    await this.#call('attach')
    const c = this.#get(id)
    return this.#output(c, [])
  }

  async follow(id: string, tail: number): Promise<ContainerOutput> {
    await this.#call('follow')
    const c = this.#get(id)
    return this.#output(c, tail > 0 ? c.output.slice(-tail) : [])
  }

  async start(id: string): Promise<void> {
    await this.#call('start')
    const c = this.#get(id)
    c.status = 'running'
    c.startedMs = this.now()
    void Promise.resolve(this.program(c, this)).catch(() => undefined)
  }

  async wait(id: string): Promise<ContainerExit> {
    await this.#call('wait')
    const c = this.#get(id)
    if (c.status === 'exited') return { exitCode: c.exitCode, oomKilled: c.oomKilled }
    return new Promise((resolve, reject) => {
      const list = this.#waits.get(id) ?? []
      list.push({ resolve, reject })
      this.#waits.set(id, list)
    })
  }

  async stop(id: string): Promise<void> {
    await this.#call('stop')
    const c = this.containers.get(id)
    if (!c || c.status !== 'running') return
    c.stopSignals++
    if (!this.ignoreStop) this.exit(c, 143)
  }

  async remove(id: string): Promise<void> {
    await this.#call('remove')
    const c = this.containers.get(id)
    if (!c) return
    if (c.status === 'running') this.exit(c, 137)
    this.containers.delete(id)
  }

  async listByLabel(label: string, value?: string): Promise<ContainerSummary[]> {
    await this.#call('listByLabel')
    return [...this.containers.values()]
      .filter((c) => (value === undefined ? label in c.spec.labels : c.spec.labels[label] === value))
      .map((c) => ({ id: c.id, name: c.spec.name, state: c.status, labels: c.spec.labels, createdMs: c.createdMs }))
  }

  async stats(id: string): Promise<ContainerUsage | undefined> {
    await this.#call('stats')
    const c = this.containers.get(id)
    if (!c || c.status !== 'running') return undefined
    return c.usage ?? { cpuNs: 1e6, memoryBytes: 1024 * 1024 }
  }

  async inspectContainer(idOrName: string): Promise<ContainerDetails | undefined> {
    await this.#call('inspectContainer')
    let c: FakeContainer
    try {
      c = this.#get(idOrName)
    } catch {
      return undefined
    }
    return {
      id: c.id,
      name: c.spec.name,
      mounts: [],
      labels: c.spec.labels,
      ...(c.spec.memoryBytes && { memoryLimitBytes: c.spec.memoryBytes }),
      state: { status: c.status, running: c.status === 'running', exitCode: c.exitCode, oomKilled: c.oomKilled, startedMs: c.startedMs },
    }
  }
}

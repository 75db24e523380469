import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import type { Test } from 'tap'
import type { ContainerClient } from '../../src/docker/container-client.js'
import { FglabClient } from '../../src/fglab/client.js'
import { Delivery } from '../../src/fglab/delivery.js'
import { Outbox } from '../../src/fglab/outbox.js'
import { LogHub } from '../../src/logs/log-hub.js'
import type { Metrics } from '../../src/metrics.js'
import { parseProjects, type Project } from '../../src/projects/schema.js'
import { Ledgers } from '../../src/results/ledger.js'
import { DockerRuntime } from '../../src/runner/docker-runtime.js'
import { ExperimentManager } from '../../src/runner/experiment-manager.js'
import { Journal } from '../../src/runner/journal.js'
import { ProcessRuntime } from '../../src/runner/process-runtime.js'
import type { SystemCharts } from '../../src/sysstats/charts.js'
import { Scheduler } from '../../src/scheduler/scheduler.js'
import { nodeDisk, type Disk } from '../../src/util/disk.js'
import { FakeContainerClient } from './fake-container-client.js'
import { FakeFglab } from './fake-fglab.js'
import { LogSink } from './harness.js'
import { TestClock } from './test-clock.js'

export const MACHINE_ID = 'aaaaaaaaaaaaaaaaaaaaaaaa'

/**
 * A disk that works until it "crashes": at its `crashAt`-th write (counting
 * writeAtomic, append, remove and rename) it does nothing, throws, and
 * refuses everything after, as a process killed at that moment would.
 */
export class CrashDisk implements Disk {
  dead = false
  crashAt = Infinity
  /** Told when the crash point is reached (the rig then stops the rest of the "process" too). */
  onCrash: () => void = () => {}
  /** Each write asked for, in order: `op path`. */
  readonly writes: string[] = []

  constructor(private readonly inner: Disk = nodeDisk) {}

  /** While set, every write fails as on a full disk (and the process goes on). */
  full = false

  #write<T>(what: string, op: () => Promise<T>): Promise<T> {
    if (this.dead) return Promise.reject(new Error('the process is gone'))
    if (this.full && !what.startsWith('remove')) return Promise.reject(Object.assign(new Error(`ENOSPC: no space left on device, ${what}`), { code: 'ENOSPC' }))
    this.writes.push(what)
    if (this.writes.length >= this.crashAt) {
      this.dead = true
      this.onCrash()
      return Promise.reject(new Error(`crashed at write ${this.writes.length}: ${what}`))
    }
    return op()
  }

  writeAtomic = (file: string, data: string) => this.#write(`write ${file}`, () => this.inner.writeAtomic(file, data))
  append = (file: string, data: string, sync: boolean) => this.#write(`append ${file}`, () => this.inner.append(file, data, sync))
  remove = (file: string) => this.#write(`remove ${file}`, () => this.inner.remove(file))
  rename = (from: string, to: string) => this.#write(`rename ${from}`, () => this.inner.rename(from, to))
  read = (file: string) => (this.dead ? Promise.reject(new Error('the process is gone')) : this.inner.read(file))
  list = (dir: string) => (this.dead ? Promise.reject(new Error('the process is gone')) : this.inner.list(dir))
}

/** One FGMachine "process" over the rig's data folder, engine and FGLab. */
export interface Instance {
  manager: ExperimentManager
  outbox: Outbox
  logHub: LogHub
  scheduler: Scheduler
  disk: CrashDisk
  logs: LogSink
  /** The first look at the engine's containers of this machine (recovery.ts, reconcile). */
  reconciled: Promise<void>
  /** Freeze it where it stands, as kill -9 would: no more disk, Docker or FGLab. */
  crash(): Promise<void>
}

export interface RunnerRig {
  dir: string
  dataDir: string
  resultsDir: string
  fglab: FakeFglab
  docker: FakeContainerClient
  clock: TestClock
  /** A project of the rig (validated as projects.json entries are), results in `resultsDir`. */
  project(entry?: Record<string, unknown>): Project
  /** Start an FGMachine over the rig: it restores its outbox and takes up what its journal and the engine hold. */
  boot(opts?: { crashAt?: number; maxFileBytes?: number; full?: boolean; metrics?: Metrics; system?: SystemCharts }): Promise<Instance>
}

export const IMAGE = 'fake/trainer:1'

/** Everything the runner needs, without Docker: the fake engine, the fake FGLab, a test clock, real disk. */
export async function runnerRig(t: Test, opts: { clock?: TestClock } = {}): Promise<RunnerRig> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-runner-'))
  const fglab = new FakeFglab()
  await fglab.start()
  const clock = opts.clock ?? new TestClock()
  const docker = new FakeContainerClient(clock.now)
  docker.images.add(IMAGE)
  const instances: Instance[] = []
  t.teardown(async () => {
    for (const i of instances) await i.crash()
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const rig: RunnerRig = {
    dir,
    dataDir: path.join(dir, 'data'),
    resultsDir: path.join(dir, 'results'),
    fglab,
    docker,
    clock,
    project(entry = {}) {
      const { projects, problems } = parseProjects({ p: { image: IMAGE, command: 'train', capacity: 0.5, results: rig.resultsDir, ...entry } }, dir)
      if (problems.length) throw new Error(JSON.stringify(problems))
      return projects.get('p')!
    },
    async boot(o = {}) {
      const logs = new LogSink()
      const log = pino({ level: 'debug' }, logs)
      const disk = new CrashDisk()
      disk.crashAt = o.crashAt ?? Infinity
      disk.full = o.full ?? false
      const client = new FglabClient({ url: fglab.url, timeoutMs: 5000 })
      const stop = new AbortController()
      // This process's view of the engine: gone with it when it crashes.
      const engine = new Proxy(docker, {
        get(target, prop, receiver) {
          const v = Reflect.get(target, prop, receiver) as unknown
          if (typeof v !== 'function') return v
          return (...args: unknown[]) => (disk.dead ? Promise.reject(new Error('the process is gone')) : (v as (...a: unknown[]) => unknown).apply(target, args))
        },
      }) as ContainerClient
      const ledgers = new Ledgers(disk, path.join(rig.dataDir, 'experiments'), log)
      const delivery = new Delivery(client, log, { backoff: { baseMs: 10, maxMs: 50, random: () => 0.5 }, sleep: clock.sleep, now: clock.now })
      const outbox = new Outbox({ dir: path.join(rig.dataDir, 'outbox'), disk, client, delivery, ledgers, log, maxBytes: 64 * 2 ** 20, maxFileBytes: o.maxFileBytes ?? 2 ** 40 })
      const logHub = new LogHub()
      const scheduler = new Scheduler([])
      const manager = new ExperimentManager({
        scheduler,
        logHub,
        outbox,
        ledgers,
        journal: new Journal(disk, path.join(rig.dataDir, 'experiments'), log),
        runtimes: { docker: new DockerRuntime(engine, log, (p) => p, stop.signal, String, clock, undefined, o.metrics), process: new ProcessRuntime() },
        log,
        clock,
        machineId: () => MACHINE_ID,
        killGraceMs: 1000,
        resultsStableMs: 20,
        metrics: o.metrics,
        system: o.system,
      })
      let crashed = false
      const instance: Instance = {
        manager,
        outbox,
        logHub,
        scheduler,
        disk,
        logs,
        reconciled: Promise.resolve(),
        async crash() {
          if (crashed) return
          crashed = true
          disk.dead = true
          disk.onCrash = () => {}
          stop.abort()
          outbox.close()
          manager.shutdown(0)
          await client.close()
        },
      }
      disk.onCrash = () => void instance.crash()
      instances.push(instance)
      await outbox.restore()
      await manager.recover()
      // As machine.ts does: in the background (it waits for Docker when Docker is away).
      instance.reconciled = manager.reconcile(MACHINE_ID, 60_000)
      return instance
    },
  }
  return rig
}

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import type { Config } from '../../src/config.js'
import { createMachine, type Machine, type MachineOptions } from '../../src/machine.js'
import { FakeFglab } from './fake-fglab.js'
import { removeContainersLabelled, testDockerHost } from './images.js'

/** DOCKER_HOST when it is a test engine; else none there (tests that need no engine), never the host's own. */
function engineForTests(): string {
  try {
    return testDockerHost()
  } catch {
    return 'unix:///nonexistent/fgmachine-tests-use-no-host-engine.sock'
  }
}

/** Log lines written by the service under test, parsed. */
export class LogSink extends Writable {
  readonly lines: Array<Record<string, unknown>> = []
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        // not JSON
      }
      if (process.env.FGM_TEST_LOGS) process.stderr.write(line + '\n')
    }
    cb()
  }
  find(msg: string | RegExp): Record<string, unknown> | undefined {
    return this.lines.find((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg))))
  }
}

/** A configuration for a service under test: loopback, a free port, no GPUs, short grace; `fields` say the rest. */
export function testConfig(fields: Partial<Config> & Pick<Config, 'fglabUrl' | 'projectsPath' | 'dataDir'>): Config {
  return {
    machineUrl: 'http://127.0.0.1:0',
    host: '127.0.0.1',
    port: 0,
    dockerHost: engineForTests(),
    logLevel: 'debug',
    killGraceMs: 2000,
    gpus: 'none',
    templatePath: undefined,
    token: undefined,
    pullStallMs: 300_000,
    outboxMaxBytes: 64 * 1024 * 1024,
    maxFileBytes: 8192 * 1024 * 1024,
    sampleMs: 5000,
    chartEveryMs: 600_000,
    ...fields,
  }
}

export interface Harness {
  dir: string
  resultsDir: string
  fglab: FakeFglab
  machine: Machine
  url: string
  logs: LogSink
  writeProjects(projects: Record<string, unknown>): void
  capacity(projectId: string): Promise<{ status: number; body: Record<string, unknown> }>
  submit(projectId: string, body: Record<string, unknown>): Promise<{ status: number; body: Record<string, unknown> }>
  close(): Promise<void>
}

export interface HarnessOptions {
  /** projects.json at start; a function gets the harness's results folder. */
  projects?: Record<string, unknown> | ((resultsDir: string) => Record<string, unknown>)
  machine?: Partial<MachineOptions>
  config?: Partial<Config>
}

/** FGMachine on a free port, against a fresh fake FGLab, in a temporary folder. */
export async function startHarness(opts: HarnessOptions = {}): Promise<Harness> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-test-'))
  const resultsDir = path.join(dir, 'results')
  const fglab = new FakeFglab()
  await fglab.start()
  const projectsPath = path.join(dir, 'projects.json')
  const writeProjects = (p: Record<string, unknown>) => writeFileSync(projectsPath, JSON.stringify(p, null, 2))
  writeProjects(typeof opts.projects === 'function' ? opts.projects(resultsDir) : (opts.projects ?? {}))
  const logs = new LogSink()
  const log = pino({ level: 'debug' }, logs)
  const config = testConfig({ fglabUrl: fglab.url, projectsPath, dataDir: dir, ...opts.config })
  const machine = await createMachine(config, {
    log,
    backoff: { baseMs: 20, maxMs: 200 },
    resultsStableMs: 50,
    ...opts.machine,
  })
  const url = await machine.listen()
  await fglab.waitFor(() => machine.registration.machineId !== undefined, 10_000, 'registration')
  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(url + p, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, unknown> }
  }
  return {
    dir,
    resultsDir,
    fglab,
    machine,
    url,
    logs,
    writeProjects,
    capacity: (projectId) => call('GET', `/projects/${projectId}/capacity`),
    submit: (projectId, body) => call('POST', `/projects/${projectId}`, body),
    async close() {
      const machineId = machine.registration.machineId
      await machine.close()
      await fglab.close()
      if (machineId) removeContainersLabelled(`fgmachine.machine=${machineId}`)
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** The service under bench as a child process: the build, with `npm start`'s node flags. */
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { CLOCK_TICKS, procStatFields } from '../src/util/proc.js'
import type { FakeFglab } from '../test/helpers/fake-fglab.js'
import { children, freePort, machineIds, serviceScript, SERVICE_NODE_ARGS, sleep, tmp } from './lib.js'

// --- the service as a child process -----------------------------------------------------------
export interface Service {
  /** The service's results folder (projects write under it). */
  resultsDir: string
  pid: number
  url: string
  machineId: string
  logs: Array<Record<string, unknown>>
  rssSamples: number[]
  /** VmHWM (peak resident set) in kB, read from /proc. */
  peakRssKb(): number
  stop(): Promise<void>
  tail(): string
}

export function procStatusKb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`)
  return Number(m[1])
}

/** CPU time the process has used so far (user + system), ms, from /proc/<pid>/stat. */
export function procCpuMs(pid: number): number {
  const f = procStatFields(readFileSync(`/proc/${pid}/stat`, 'utf8')) ?? []
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS
}

export interface ServiceOptions {
  /** Its folder's name under the bench's temporary folder. */
  name: string
  logLevel: string
  /** projects.json, given the results folder. */
  projects: (resultsDir: string) => Record<string, unknown>
  /** Ready when this project's capacity answers 200 (with this capacity, if given). */
  ready: { project: string; capacity?: number }
  env?: Record<string, string>
}

/** FGMachine as users run it (dist/server.js with `npm start`'s flags), against `fglab`, in a folder of its own. */
export async function startService(fglab: FakeFglab, opts: ServiceOptions): Promise<Service> {
  const { name, logLevel } = opts
  const dir = path.join(tmp, name)
  const resultsDir = path.join(dir, 'results')
  mkdirSync(resultsDir, { recursive: true })
  const projects = opts.projects(resultsDir)
  writeFileSync(path.join(dir, 'projects.json'), JSON.stringify(projects, null, 2))
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const known = new Set(fglab.machines.keys())
  const child = spawn(process.execPath, [...SERVICE_NODE_ARGS, serviceScript()], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...(process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {}),
      FGLAB_URL: fglab.url,
      FGMACHINE_URL: url,
      HOST: '127.0.0.1',
      FGMACHINE_PROJECTS: path.join(dir, 'projects.json'),
      FGMACHINE_DATA_DIR: dir,
      LOG_LEVEL: logLevel,
      ...opts.env,
    },
  })
  children.add(child)
  const logs: Array<Record<string, unknown>> = []
  let raw = ''
  let partial = ''
  child.stdout!.on('data', (b: Buffer) => {
    const text = partial + b.toString()
    const lines = text.split('\n')
    partial = lines.pop() ?? ''
    for (const line of lines) {
      raw = (raw + line + '\n').slice(-8000)
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        // not JSON
      }
    }
  })
  child.stderr!.on('data', (b: Buffer) => {
    raw = (raw + b.toString()).slice(-8000)
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const tail = () => raw
  // Ready: registered with FGLab and answering capacity for the project.
  const deadline = Date.now() + 30_000
  let machineId: string | undefined
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the service exited at start (${child.exitCode ?? child.signalCode}):\n${tail()}`)
    if (Date.now() > deadline) throw new Error(`the service did not get ready in 30 s:\n${tail()}`)
    machineId ??= [...fglab.machines.keys()].find((k) => !known.has(k))
    if (machineId) {
      machineIds.add(machineId)
      try {
        const res = await fetch(`${url}/projects/${opts.ready.project}/capacity`)
        const body = (await res.json()) as { capacity?: number }
        if (res.status === 200 && (opts.ready.capacity === undefined || body.capacity === opts.ready.capacity)) break
      } catch {
        // not listening yet
      }
    }
    await sleep(50)
  }
  const pid = child.pid!
  const rssSamples: number[] = []
  const sampler = setInterval(() => {
    try {
      rssSamples.push(procStatusKb(pid, 'VmRSS'))
    } catch {
      // exiting
    }
  }, 100)
  return {
    resultsDir,
    pid,
    url,
    machineId: machineId!,
    logs,
    rssSamples,
    peakRssKb: () => procStatusKb(pid, 'VmHWM'),
    tail,
    async stop() {
      clearInterval(sampler)
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        const killer = setTimeout(() => child.kill('SIGKILL'), 10_000)
        await exited
        clearTimeout(killer)
      }
      children.delete(child)
    },
  }
}

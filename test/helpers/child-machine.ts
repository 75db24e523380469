import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { FakeFglab } from './fake-fglab.js'
import { removeContainersLabelled } from './images.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

export interface ChildMachine {
  url: string
  child: ChildProcess
  /** Resident memory now, and at its peak so far (VmRSS, VmHWM from /proc), in MB. */
  rssMb(): { now: number; peak: number }
  /** Parsed log lines so far. */
  lines: Array<Record<string, unknown>>
  /** kill -9: no shutdown, no cleanup, as a crash or an OOM kill. */
  crash(): Promise<void>
  /** SIGTERM, as `docker stop`; resolves with the exit code. */
  stop(): Promise<number | null>
}

export interface ChildMachineOptions {
  fglabUrl: string
  port: number
  dataDir: string
  projectsPath: string
  env?: Record<string, string>
  /** Return at once, not when it answers (for tests of its start-up itself). */
  noWait?: boolean
  /** Run this built entry point (see built-machine.ts) with these node flags, instead of src/ through tsx. */
  built?: { script: string; nodeArgs: string[] }
}

/**
 * FGMachine as its own process (src/server.ts through tsx), configured by the
 * environment as a user runs it: for tests that crash it and start it again.
 */
export async function spawnMachine(opts: ChildMachineOptions): Promise<ChildMachine> {
  const url = `http://127.0.0.1:${opts.port}`
  const args = opts.built ? [...opts.built.nodeArgs, opts.built.script] : ['--import', 'tsx', 'src/server.ts']
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DOCKER_HOST: process.env.DOCKER_HOST,
      FGLAB_URL: opts.fglabUrl,
      FGMACHINE_URL: url,
      HOST: '127.0.0.1',
      FGMACHINE_PROJECTS: opts.projectsPath,
      FGMACHINE_DATA_DIR: opts.dataDir,
      FGMACHINE_GPUS: 'none',
      FGMACHINE_KILL_GRACE_S: '2',
      LOG_LEVEL: 'debug',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: Array<Record<string, unknown>> = []
  let buffered = ''
  child.stdout!.on('data', (b: Buffer) => {
    buffered += b.toString()
    let nl
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        // not a log line
      }
      if (process.env.FGM_TEST_LOGS) process.stderr.write(`[child ${child.pid}] ${line}\n`)
    }
  })
  let stderr = ''
  child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const deadline = Date.now() + 30_000
  for (; !opts.noWait; ) {
    if (child.exitCode !== null) throw new Error(`FGMachine exited at start (${child.exitCode}):\n${stderr}`)
    const ok = await fetch(`${url}/health`).then(
      () => true,
      () => false,
    )
    if (ok) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`FGMachine did not answer within 30 s:\n${stderr}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    url,
    child,
    rssMb() {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
      const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1])
      return { now: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 }
    },
    lines,
    async crash() {
      child.kill('SIGKILL')
      await exited
    },
    async stop() {
      child.kill('SIGTERM')
      return exited
    },
  }
}

/**
 * A folder and a fake FGLab for machines run as child processes; when the
 * test ends, every container a machine registered there made is removed,
 * then the FGLab and the folder go.
 */
export async function machinesWorld(t: Test, prefix: string): Promise<{ dir: string; fglab: FakeFglab }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix))
  const fglab = new FakeFglab()
  await fglab.start()
  t.teardown(async () => {
    for (const id of fglab.machines.keys()) removeContainersLabelled(`fgmachine.machine=${id}`)
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { dir, fglab }
}

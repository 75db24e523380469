import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { CLOCK_TICKS, procStatFields } from '../util/proc.js'
import { pumpOutput } from './pump.js'
import type { ExitInfo, LaunchSpec, RunHandle, Runtime } from './runtime.js'

/**
 * Local processes, as the original FGMachine runs them (the seed's "Option 1"):
 * `command args... options...` in `cwd`, no shell.
 */
export class ProcessRuntime implements Runtime {
  readonly kind = 'process' as const

  async launch(spec: LaunchSpec): Promise<RunHandle> {
    const command = spec.project.command
    if (!command) throw new Error('a local project needs a command')
    const child = spawn(command, spec.argv, {
      cwd: spec.project.workDir,
      env: { ...inheritedEnv(), ...spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so that stop() reaches the children it spawns too.
      detached: true,
    })
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve)
      child.once('error', (err) => reject(new Error(`cannot run ${command}: ${err.message}`)))
    })
    const outputDone = Promise.all([
      pumpOutput(child.stdout!, (b) => spec.output('stdout', b)),
      pumpOutput(child.stderr!, (b) => spec.output('stderr', b)),
    ])
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => {
        // A child it left behind may hold the pipes open: wait for them, but not forever.
        const late = new Promise<void>((r) => setTimeout(r, 2000).unref())
        void Promise.race([outputDone, late]).then(() => resolve({ exitCode: code, signal: signal ?? undefined }))
      })
    })
    let ended = false
    void exited.then(() => (ended = true))
    const signalGroup = (sig: NodeJS.Signals) => {
      if (ended || child.pid === undefined) return
      try {
        process.kill(-child.pid, sig)
      } catch {
        // already gone
      }
    }
    return {
      pid: child.pid,
      exited,
      async stop(graceMs) {
        signalGroup('SIGTERM')
        const timer = setTimeout(() => signalGroup('SIGKILL'), graceMs)
        await exited
        clearTimeout(timer)
      },
      async dispose() {},
    }
  }
}

/**
 * A local experiment left by an FGMachine that crashed: end its process group
 * if that process is still the one we started, i.e. it started within a few
 * seconds of `launchedMs` (so that a reused pid is never hit). Returns whether
 * something was killed.
 */
export function killLeftover(pid: number, launchedMs: number): boolean {
  const started = processStartMs(pid)
  if (started === undefined || Math.abs(started - launchedMs) > 5000) return false
  try {
    process.kill(-pid, 'SIGKILL')
    return true
  } catch {
    return false
  }
}

/** When a process started (ms since the epoch), from /proc; undefined if there is no such process. */
function processStartMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const ticks = Number(procStatFields(stat)?.[19])
    const btime = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1])
    if (!Number.isFinite(ticks) || !Number.isFinite(btime)) return undefined
    return btime * 1000 + (ticks * 1000) / CLOCK_TICKS
  } catch {
    return undefined
  }
}

/** FGMachine's environment, as the original passes it on, less its own secret. */
function inheritedEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.FGMACHINE_TOKEN
  return env
}

import type { Project } from '../projects/schema.js'
import type { Lease } from '../scheduler/scheduler.js'
import type { Stream } from '../logs/log-hub.js'

/** Everything a runtime needs to launch one experiment. */
export interface LaunchSpec {
  experimentId: string
  project: Project
  /** Arguments after the command (args, then options; GPU flags included). */
  argv: string[]
  /** The experiment's own results folder, as FGMachine sees it. */
  resultsDir: string
  /** FGLAB_* variables and the project's env. */
  env: Record<string, string>
  lease: Lease
  machineId: string | undefined
  /** Where the program's output goes, in order, as it comes: bytes ending on whole UTF-8 characters. */
  output: (stream: Stream, data: Buffer) => void
  /** Progress worth showing the user before the program runs (image pulls). */
  status: (text: string) => void
  /**
   * Aborted (reason: KilledBeforeStartError) when the experiment is killed: a
   * launch still pulling its image stops waiting and makes no container.
   */
  killed: AbortSignal
}

/** The launch was given up because the experiment was killed first. */
export class KilledBeforeStartError extends Error {
  override readonly name = 'KilledBeforeStartError'
  constructor() {
    super('killed before it started')
  }
}

export interface ExitInfo {
  /** The program's exit code; null when it was ended by a signal. */
  exitCode: number | null
  signal?: string
  oomKilled?: boolean
  /** Stopped for running past the project's timeout. */
  timedOut?: boolean
  /** Why the program could not run or ended abnormally, in words. */
  error?: string
  /** When it ended (ms since the epoch), as far as FGMachine knows. */
  endedMs?: number
}

/** A launched experiment. */
export interface RunHandle {
  /** The container, for a Docker experiment. */
  readonly containerId?: string
  /** The process (and process group) id, for a local experiment. */
  readonly pid?: number
  /** Resolves when the program ended and all its output was delivered. */
  readonly exited: Promise<ExitInfo>
  /** Ask the program to stop (SIGTERM), then force it (SIGKILL) after `graceMs`. */
  stop(graceMs: number): Promise<void>
  /** Remove what the run left behind (the container). */
  dispose(): Promise<void>
}

/** A way of running experiments: Docker containers or local processes. */
export interface Runtime {
  readonly kind: 'docker' | 'process'
  /** Launch; rejects when the program could not be started at all. */
  launch(spec: LaunchSpec): Promise<RunHandle>
}

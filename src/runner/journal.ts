import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'
import type { Lease } from '../scheduler/scheduler.js'
import { writeFileDurably } from '../util/durable.js'
import { isObjectId } from '../util/ids.js'
import type { ExitInfo } from './runtime.js'

/**
 * Where an experiment stands, as far as a restarted FGMachine needs to know:
 * - accepted: capacity reserved, not launched yet (no container, or one never started)
 * - launched: running (a container, or a local process)
 * - exited: ended, `exit` says how; reports not yet queued
 * - reporting: the status and `finished` are in the outbox; the results folder goes once it is empty
 * - done: fully reported, but its container could not be removed: kept so that the
 *   container is removed later, not taken up again from its labels and reported twice
 */
export type Phase = 'accepted' | 'launched' | 'exited' | 'reporting' | 'done'

export interface ExperimentRecord {
  id: string
  projectId: string
  runtime: 'docker' | 'process'
  /** The experiment's own results folder, as FGMachine sees it. */
  resultsDir: string
  keepResults: boolean
  /** The project's run-time limit (seconds), if any. */
  timeoutS?: number
  lease: Lease
  phase: Phase
  containerId?: string
  /** A local experiment's process (group) id, to end it if it outlived a crash. */
  pid?: number
  /** When the program started (ms since the epoch). */
  launchedMs?: number
  killed?: boolean
  exit?: ExitInfo
  /** Removing its container failed once it ended (Docker away for a moment). */
  containerLeft?: boolean
}

/**
 * One small JSON file per experiment this machine holds, in the data folder,
 * written synchronously at each change of phase. With Docker's labels it is
 * what a restarted FGMachine rebuilds its state from; it goes when the
 * experiment is fully reported.
 */
export class Journal {
  constructor(
    readonly dir: string,
    private readonly log: Logger,
  ) {}

  write(record: ExperimentRecord): void {
    mkdirSync(this.dir, { recursive: true })
    const file = path.join(this.dir, `${record.id}.json`)
    writeFileDurably(file, JSON.stringify(record))
  }

  remove(id: string): void {
    rmSync(path.join(this.dir, `${id}.json`), { force: true })
  }

  /** Every record left by an earlier run. Unreadable ones are logged and set aside (renamed `.bad`). */
  loadAll(): ExperimentRecord[] {
    let names: string[]
    try {
      names = readdirSync(this.dir)
    } catch {
      return []
    }
    const records: ExperimentRecord[] = []
    for (const name of names) {
      const m = /^([0-9a-f]{24})\.json$/i.exec(name)
      if (!m) continue
      const file = path.join(this.dir, name)
      try {
        const r = JSON.parse(readFileSync(file, 'utf8')) as ExperimentRecord
        if (r.id !== m[1] || !isObjectId(r.id) || !r.lease || !r.phase || !r.resultsDir) throw new Error('not an experiment record')
        records.push(r)
      } catch (err) {
        this.log.error({ file, err: (err as Error).message }, 'unreadable experiment record set aside')
        renameSync(file, `${file}.bad`)
      }
    }
    return records
  }
}

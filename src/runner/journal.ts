import path from 'node:path'
import type { Logger } from 'pino'
import type { Lease } from '../scheduler/scheduler.js'
import type { Disk } from '../util/disk.js'
import { isObjectId } from '../util/ids.js'
import type { ExitInfo } from './runtime.js'

/**
 * Where an experiment stands, as far as a restarted FGMachine needs to know:
 * - accepted: capacity reserved, not launched yet (no container, or one never started)
 * - launched: running (a container, or a local process); `started` is queued for FGLab
 * - exited: ended, `exit` says how (written before its capacity is freed); its last
 *   results and final reports are being queued
 * - reporting: everything is queued; the results folder's fate is decided once it has all
 *   ended. A restart in `exited` or `reporting` does every end step again: each is
 *   idempotent (the experiment's ledger says what FGLab already has)
 * - done: fully reported, but its container could not be removed: kept so that the
 *   container is removed later, not taken up again from its labels and reported twice
 */
export type Phase = 'accepted' | 'launched' | 'exited' | 'reporting' | 'done'

export interface RunRecord {
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
  /** The project turned the system charts off (system_charts: false); absent: on. */
  charts?: false
  /** Removing its container failed once it ended (Docker away for a moment). */
  containerLeft?: boolean
}

const PHASES = new Set<Phase>(['accepted', 'launched', 'exited', 'reporting', 'done'])

/**
 * One small JSON file per experiment this machine holds, in the data folder,
 * replaced whole (and flushed) at each change. With Docker's labels it is
 * what a restarted FGMachine rebuilds its state from; it goes when the
 * experiment is fully reported.
 */
export class Journal {
  constructor(
    private readonly disk: Disk,
    readonly dir: string,
    private readonly log: Logger,
  ) {}

  write(record: RunRecord): Promise<void> {
    return this.disk.writeAtomic(path.join(this.dir, `${record.id}.json`), JSON.stringify(record))
  }

  remove(id: string): Promise<void> {
    return this.disk.remove(path.join(this.dir, `${id}.json`))
  }

  /** Every record left by an earlier run. Unreadable ones are logged and set aside (renamed `.bad`). */
  async loadAll(): Promise<RunRecord[]> {
    const records: RunRecord[] = []
    for (const name of await this.disk.list(this.dir)) {
      const m = /^([0-9a-f]{24})\.json$/i.exec(name)
      if (!m) continue
      const file = path.join(this.dir, name)
      try {
        const r = JSON.parse((await this.disk.read(file)) ?? '') as RunRecord
        if (r.id !== m[1] || !isObjectId(r.id) || !r.lease || !PHASES.has(r.phase) || !r.resultsDir) throw new Error('not an experiment record')
        records.push(r)
      } catch (err) {
        this.log.error({ file, err: (err as Error).message }, 'unreadable experiment record set aside')
        await this.disk.rename(file, `${file}.bad`).catch(() => undefined)
      }
    }
    return records
  }
}

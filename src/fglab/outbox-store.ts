import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import { writeFileDurably } from '../util/durable.js'
import { isObjectId } from '../util/ids.js'
import type { OutboxEntry } from './outbox.js'

export interface StoredEntry {
  seq: number
  entry: OutboxEntry
  /** Its size on disk. */
  bytes: number
}

const KINDS = new Set(['started', 'update', 'results-file', 'finished'])

/**
 * The outbox on disk: one small JSON file per report, `<dir>/<experiment>/<seq>.json`,
 * written (synchronously, before the report is sent) and removed when FGLab has
 * acknowledged it. What is there after a crash is sent again on start.
 */
export class OutboxStore {
  constructor(
    readonly dir: string,
    private readonly log: Logger,
  ) {}

  /** Write one entry (its JSON); it is on disk when this returns. */
  append(experimentId: string, seq: number, json: string): void {
    const dir = path.join(this.dir, experimentId)
    mkdirSync(dir, { recursive: true })
    const file = path.join(dir, `${String(seq).padStart(12, '0')}.json`)
    writeFileDurably(file, json)
  }

  async remove(experimentId: string, seq: number): Promise<void> {
    await rm(path.join(this.dir, experimentId, `${String(seq).padStart(12, '0')}.json`), { force: true })
  }

  /** Forget an experiment whose reports are all sent. */
  removeExperiment(experimentId: string): void {
    rmSync(path.join(this.dir, experimentId), { recursive: true, force: true })
  }

  /** Everything still unsent, per experiment, in order. Unreadable entries are logged and skipped. */
  load(): Map<string, StoredEntry[]> {
    const out = new Map<string, StoredEntry[]>()
    let ids: string[]
    try {
      ids = readdirSync(this.dir)
    } catch {
      return out
    }
    for (const id of ids) {
      if (!isObjectId(id)) continue
      const entries: StoredEntry[] = []
      for (const name of readdirSync(path.join(this.dir, id)).sort()) {
        const m = /^(\d{12})\.json$/.exec(name)
        if (!m) continue
        const file = path.join(this.dir, id, name)
        try {
          const text = readFileSync(file, 'utf8')
          const entry = JSON.parse(text) as OutboxEntry
          if (!entry || !KINDS.has(entry.kind)) throw new Error('not an outbox entry')
          entries.push({ seq: Number(m[1]), entry, bytes: Buffer.byteLength(text) })
        } catch (err) {
          this.log.error({ experimentId: id, file, err: (err as Error).message }, 'unreadable outbox entry skipped')
        }
      }
      if (entries.length) out.set(id, entries)
      else this.removeExperiment(id)
    }
    return out
  }
}

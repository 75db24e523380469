import path from 'node:path'
import type { Logger } from 'pino'
import { AppendLog } from '../util/append-log.js'
import type { Disk } from '../util/disk.js'

/** How one report ended: FGLab has it, or it was given up (why), maybe with a note for the user. */
export type Outcome = { sent: true; sig?: string; note?: string } | { sent: false; reason: string }

/** Reports are named: `started`, `summary`, `status`, `finished`, and `file:<name>` for each results file. */
type Line = { r: string; o: 'sent' | 'given-up'; sig?: string; why?: string; note?: string } | { deleted: string }

interface Entry {
  sent: boolean
  sig?: string
  /** Why it was given up, or a note on how it was sent. */
  text?: string
}

/** At most this many problems are listed on the experiment's page (the rest are counted). */
const LISTED = 10

/**
 * What became of each report of one experiment, kept on disk until the
 * experiment is done: it is what says, after a restart as before it, that a
 * results file was already sent (not again), and that the results folder must
 * stay (something in it never reached FGLab). A given-up report is flushed to
 * the disk before it counts as done; a sent one is not (losing it costs one
 * more upload, never a result).
 */
export class Ledger {
  #entries = new Map<string, Entry>()
  #deleted: string | undefined
  #problems = 0

  private constructor(private readonly log: AppendLog) {}

  static async open(disk: Disk, dir: string, experimentId: string, logger: Logger): Promise<Ledger> {
    const file = path.join(dir, `${experimentId}.ledger.jsonl`)
    const ledger = new Ledger(new AppendLog(disk, file))
    const { records, bad } = await AppendLog.read(disk, file)
    if (bad) logger.warn({ experimentId, file, lines: bad }, 'unreadable lines in a ledger skipped (cut off by a crash?)')
    for (const r of records as Array<Partial<Extract<Line, { r: string }>> & Partial<Extract<Line, { deleted: string }>>>) {
      if (typeof r.deleted === 'string') ledger.#deleted = r.deleted
      else if (typeof r.r === 'string') ledger.#set(r.r, { sent: r.o === 'sent', sig: r.sig, text: r.why ?? r.note })
    }
    return ledger
  }

  /** Whether this report already has its outcome. */
  has(report: string): boolean {
    return this.#entries.has(report)
  }

  /** The signature (size, time, inode) of the form in which this results file was last sent. */
  sentSignature(name: string): string | undefined {
    const e = this.#entries.get(`file:${name}`)
    return e?.sent ? e.sig : undefined
  }

  /** Record an outcome; a given-up one is on the disk itself when this resolves. */
  async record(report: string, outcome: Outcome): Promise<void> {
    const line: Line = outcome.sent
      ? { r: report, o: 'sent', ...(outcome.sig && { sig: outcome.sig }), ...(outcome.note && { note: outcome.note }) }
      : { r: report, o: 'given-up', why: outcome.reason }
    await this.log.append(line, !outcome.sent)
    this.#set(report, { sent: outcome.sent, sig: outcome.sent ? outcome.sig : undefined, text: outcome.sent ? outcome.note : outcome.reason })
  }

  /** FGLab no longer has the experiment (deleted there): nothing more is sent, and its folder stays. */
  get deleted(): string | undefined {
    return this.#deleted
  }

  async markDeleted(why: string): Promise<void> {
    await this.log.append({ deleted: why }, true)
    this.#deleted = why
  }

  /** Why the results folder must stay, if it must: a file FGLab does not have, or the experiment is gone from FGLab. */
  keepFolder(): string | undefined {
    if (this.#deleted) return this.#deleted
    for (const [report, e] of this.#entries) if (!e.sent && report.startsWith('file:')) return `${report.slice(5)} was not sent: ${e.text}`
    return undefined
  }

  /** What the user should read on the experiment's page: each results file given up or sent otherwise, and why. */
  problems(): string | undefined {
    if (this.#problems === 0) return undefined
    const lines: string[] = []
    for (const [report, e] of this.#entries) {
      if (!report.startsWith('file:') || (e.sent && !e.text)) continue
      if (lines.length === LISTED) break
      lines.push(`${report.slice(5)}: ${e.sent ? e.text : `not sent: ${e.text}`}`)
    }
    if (this.#problems > LISTED) lines.push(`and ${this.#problems - LISTED} more (see FGMachine's log)`)
    return lines.join(' | ')
  }

  /** How many results files reached FGLab (as fields or as files), and how many did not. */
  files(): { sent: number; notSent: number } {
    let sent = 0
    let notSent = 0
    for (const [report, e] of this.#entries) {
      if (!report.startsWith('file:')) continue
      if (e.sent) sent++
      else notSent++
    }
    return { sent, notSent }
  }

  /** Forget it all: the experiment is done. */
  remove(): Promise<void> {
    return this.log.remove()
  }

  #set(report: string, e: Entry): void {
    const problem = (x: Entry | undefined) => (x !== undefined && report.startsWith('file:') && (!x.sent || x.text !== undefined) ? 1 : 0)
    this.#problems += problem(e) - problem(this.#entries.get(report))
    // Only what is needed later is kept: a sent report's signature, a problem's text.
    this.#entries.set(report, e)
  }
}

/** The ledgers of the experiments this machine holds, opened once each. */
export class Ledgers {
  #open = new Map<string, Promise<Ledger>>()

  constructor(
    private readonly disk: Disk,
    readonly dir: string,
    private readonly log: Logger,
  ) {}

  open(experimentId: string): Promise<Ledger> {
    let l = this.#open.get(experimentId)
    if (!l) {
      l = Ledger.open(this.disk, this.dir, experimentId, this.log)
      // A ledger that could not be read is tried again next time.
      l.catch(() => this.#open.delete(experimentId))
      this.#open.set(experimentId, l)
    }
    return l
  }

  /** The experiment is done: its ledger goes, from the disk and from memory. */
  async remove(experimentId: string): Promise<void> {
    const l = await this.open(experimentId)
    await l.remove()
    this.#open.delete(experimentId)
  }

  /** Experiment ids with a ledger on disk (to remove those no journal record owns any more). */
  async onDisk(): Promise<string[]> {
    const suffix = '.ledger.jsonl'
    return (await this.disk.list(this.dir)).filter((n) => n.endsWith(suffix)).map((n) => n.slice(0, -suffix.length))
  }
}

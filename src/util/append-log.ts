import type { Disk } from './disk.js'

interface Waiter {
  resolve: () => void
  reject: (err: Error) => void
}

/**
 * A file of JSON lines, appended to in batches: every line handed in while a
 * write is under way goes out in the next write, together (group commit), so
 * a burst of a thousand records costs a few writes, not a thousand. One
 * operation at a time reaches the disk, in the order they were asked for.
 */
export class AppendLog {
  #lines: string[] = []
  #waiters: Waiter[] = []
  #sync = false
  #chain: Promise<void> = Promise.resolve()
  #scheduled = false

  constructor(
    private readonly disk: Disk,
    readonly file: string,
  ) {}

  /** Append one record; resolves once it is written (and on the disk itself, with `sync`). */
  append(record: unknown, sync = false): Promise<void> {
    this.#lines.push(JSON.stringify(record) + '\n')
    if (sync) this.#sync = true
    const done = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }))
    if (!this.#scheduled) {
      this.#scheduled = true
      this.#chain = this.#chain.then(() => this.#flush())
    }
    return done
  }

  /** Replace the whole file with these records (written atomically), after what is queued. */
  rewrite(records: readonly unknown[]): Promise<void> {
    return this.#then(() => this.disk.writeAtomic(this.file, records.map((r) => JSON.stringify(r) + '\n').join('')))
  }

  /** Remove the file, after what is queued. */
  remove(): Promise<void> {
    return this.#then(() => this.disk.remove(this.file))
  }

  /** Every record the file holds, and how many of its lines could not be read (a line cut off by a crash). */
  static async read(disk: Disk, file: string): Promise<{ records: unknown[]; bad: number }> {
    const text = await disk.read(file)
    const records: unknown[] = []
    let bad = 0
    for (const line of text?.split('\n') ?? []) {
      if (line === '') continue
      try {
        records.push(JSON.parse(line))
      } catch {
        bad++
      }
    }
    return { records, bad }
  }

  #then(op: () => Promise<void>): Promise<void> {
    const p = this.#chain.then(op)
    // The chain goes on whatever this one operation did; its caller hears of a failure.
    this.#chain = p.catch(() => undefined)
    return p
  }

  async #flush(): Promise<void> {
    this.#scheduled = false
    const data = this.#lines.join('')
    const waiters = this.#waiters
    const sync = this.#sync
    this.#lines = []
    this.#waiters = []
    this.#sync = false
    try {
      await this.disk.append(this.file, data, sync)
      for (const w of waiters) w.resolve()
    } catch (err) {
      for (const w of waiters) w.reject(err as Error)
    }
  }
}

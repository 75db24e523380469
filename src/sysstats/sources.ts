import { readdir, readFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { ContainerClient, ContainerUsage } from '../docker/container-client.js'
import { runNvidiaSmi, type NvidiaSmi } from '../gpu/discovery.js'
import { parseGpuQuery, QUERY_ARGS } from '../gpu/nvidia-smi.js'
import type { Clock } from '../util/clock.js'
import { CLOCK_TICKS, procStatFields } from '../util/proc.js'
import type { GpuReading } from './types.js'

/** What an experiment has used so far: CPU time since it started, memory now. */
export type Usage = ContainerUsage

/**
 * One experiment's use, read now; undefined once it no longer runs. Throws
 * when it cannot be read at all (Docker away, no /proc): the caller tries
 * again at the next tick.
 */
export type UsageSource = () => Promise<Usage | undefined>

/** A container's use, from Docker's stats (one reading each time, no stream held open). */
export function containerSource(docker: Pick<ContainerClient, 'stats'>, containerId: string): UsageSource {
  return () => docker.stats(containerId)
}

let pageBytes: number | undefined

/** The kernel's page size, from this process's own resident size in pages and in bytes. */
async function pageSize(proc: string): Promise<number> {
  if (pageBytes) return pageBytes
  const pages = Number((await readFile(`${proc}/self/statm`, 'utf8')).split(' ')[1])
  const ratio = process.memoryUsage().rss / pages
  // A power of two between 4 KiB and 64 KiB (the two sizes Linux ships with), nearest the ratio.
  pageBytes = [4096, 16384, 65536].reduce((best, p) => (Math.abs(Math.log2(p / ratio)) < Math.abs(Math.log2(best / ratio)) ? p : best), 4096)
  return pageBytes
}

/**
 * A local experiment's process tree: every process in its process group (it
 * is started as a group leader), from /proc. CPU is user + system time of the
 * live processes and of the children they reaped; memory is their resident
 * sets summed (shared pages counted in each, as `ps` does). Linux only.
 */
export function processGroupSource(pgid: number, proc = '/proc'): UsageSource {
  return async () => {
    const page = await pageSize(proc)
    let cpuTicks = 0
    let rssPages = 0
    let found = false
    for (const name of await readdir(proc)) {
      if (!/^\d+$/.test(name)) continue
      let f: string[] | undefined
      try {
        f = procStatFields(await readFile(`${proc}/${name}/stat`, 'utf8'))
      } catch {
        continue // ended meanwhile
      }
      // After the name: state, ppid, pgrp, …, utime (11), stime, cutime, cstime, …, rss (21).
      if (!f || Number(f[2]) !== pgid) continue
      // A zombie's time still counts (it moves to its parent's cutime once reaped, not before),
      // but only a live process says the group still runs.
      if (f[0] !== 'Z') found = true
      cpuTicks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
      rssPages += Number(f[21])
    }
    if (!found) return undefined
    return { cpuNs: (cpuTicks / CLOCK_TICKS) * 1e9, memoryBytes: rssPages * page }
  }
}

/**
 * The GPUs' utilisation and memory, for every experiment that holds one: one
 * nvidia-smi call (the query and parser GPU discovery uses) however many
 * experiments ask within `maxAgeMs`. A failure is logged once (until it works
 * again) and reads as no values, never as zeros.
 */
export class GpuReader {
  #last: { at: number; gpus: Map<number, GpuReading> } | undefined
  #reading: Promise<Map<number, GpuReading>> | undefined
  #failing: string | undefined

  constructor(
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly maxAgeMs: number,
    private readonly nvidiaSmi: NvidiaSmi = runNvidiaSmi,
  ) {}

  read(): Promise<Map<number, GpuReading>> {
    if (this.#last && this.clock.now() - this.#last.at < this.maxAgeMs) return Promise.resolve(this.#last.gpus)
    this.#reading ??= this.#query().finally(() => (this.#reading = undefined))
    return this.#reading
  }

  async #query(): Promise<Map<number, GpuReading>> {
    const gpus = new Map<number, GpuReading>()
    try {
      for (const g of parseGpuQuery(await this.nvidiaSmi(QUERY_ARGS, 10_000))) {
        gpus.set(g.index, { index: g.index, utilPct: g.utilizationPct, memoryUsedMiB: g.memoryUsedMiB, memoryTotalMiB: g.memoryTotalMiB })
      }
      if (this.#failing) this.log.info('nvidia-smi answers again: GPU use is charted again')
      this.#failing = undefined
    } catch (err) {
      const reason = (err as Error).message
      if (this.#failing !== reason) this.log.warn({ reason }, "cannot read the GPUs' use for the system charts (nvidia-smi); the charts go on without it")
      this.#failing = reason
    }
    this.#last = { at: this.clock.now(), gpus }
    return gpus
  }
}

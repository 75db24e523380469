import type { Project } from '../projects/schema.js'
import type { Refusal } from './refusal.js'
import { UNIT, toUnits } from './units.js'

export interface GpuShare {
  /** Host index of the GPU (as nvidia-smi numbers it). */
  index: number
  /** Units of that GPU held. */
  units: number
}

/** What one experiment holds while it runs. */
export interface Lease {
  experimentId: string
  projectId: string
  cpuUnits: number
  gpus: GpuShare[]
}

/** What a project asks for, in units. */
interface Demand {
  cpuUnits: number
  /** Fraction of one GPU, in units (gpu_capacity ≤ 1). */
  gpuUnits?: number
  /** Whole GPUs (gpu_capacity > 1). */
  wholeGpus?: number
}

function demandOf(project: Pick<Project, 'capacity' | 'gpu_capacity'>): Demand {
  const d: Demand = { cpuUnits: toUnits(project.capacity) }
  const g = project.gpu_capacity
  if (g !== undefined) {
    if (g > 1) d.wholeGpus = g
    else d.gpuUnits = toUnits(g)
  }
  return d
}

/**
 * Leases of machine and GPU capacity. `reserve` is synchronous: the check and
 * the reservation are one step, so concurrent starts can never over-allocate.
 */
export class Scheduler {
  #cpuUsed = 0
  #gpuUsed: Map<number, number>
  #leases = new Map<string, Lease>()

  constructor(gpuIndices: readonly number[] = []) {
    this.#gpuUsed = new Map(gpuIndices.map((i) => [i, 0]))
  }

  /** How many more experiments of this project could start now. */
  capacity(project: Pick<Project, 'capacity' | 'gpu_capacity'>): number {
    const d = demandOf(project)
    // capacity 0 asks nothing of the machine (only GPU projects may: schema.ts). An
    // adopted lease may over-commit a GPU or the machine: what is over counts as full.
    let n = d.cpuUnits === 0 ? Infinity : Math.floor(Math.max(0, UNIT - this.#cpuUsed) / d.cpuUnits)
    if (d.gpuUnits !== undefined) {
      let g = 0
      for (const used of this.#gpuUsed.values()) g += Math.floor(Math.max(0, UNIT - used) / d.gpuUnits)
      n = Math.min(n, g)
    } else if (d.wholeGpus !== undefined) {
      n = Math.min(n, Math.floor(this.#freeWholeGpus().length / d.wholeGpus))
    }
    return Math.max(0, n)
  }

  /** Why `capacity(project)` is 0: a GPU project on a machine with too few GPUs, or everything in use. */
  refusal(project: Pick<Project, 'id' | 'capacity' | 'gpu_capacity'>): Refusal {
    const d = demandOf(project)
    const gpus = this.#gpuUsed.size
    if ((d.gpuUnits !== undefined || d.wholeGpus !== undefined) && gpus === 0) {
      return {
        cause: 'no_gpus',
        reason: `project ${project.id} asks for GPUs (gpu_capacity ${project.gpu_capacity}) and this machine has none to give (nvidia-smi found none, or FGMACHINE_GPUS leaves none)`,
      }
    }
    if (d.wholeGpus !== undefined && d.wholeGpus > gpus) {
      return { cause: 'too_few_gpus', reason: `project ${project.id} asks for ${d.wholeGpus} whole GPUs per experiment; this machine has ${gpus}` }
    }
    const pct = (units: number) => `${Math.round((100 * units) / UNIT)}%`
    const inUse = [`machine ${pct(this.#cpuUsed)}`, ...[...this.#gpuUsed].sort((a, b) => a[0] - b[0]).map(([i, used]) => `GPU ${i} ${pct(used)}`)]
    return {
      cause: 'full',
      reason: `busy: ${this.#leases.size} experiment(s) hold this machine's capacity (${inUse.join(', ')} in use); project ${project.id} needs ${[
        d.cpuUnits ? `${pct(d.cpuUnits)} of the machine` : '',
        d.gpuUnits !== undefined ? `${pct(d.gpuUnits)} of a GPU` : d.wholeGpus !== undefined ? `${d.wholeGpus} free GPUs` : '',
      ]
        .filter(Boolean)
        .join(' and ')}`,
    }
  }

  /** Reserve what one experiment needs, or return undefined when it does not fit. */
  reserve(experimentId: string, project: Pick<Project, 'id' | 'capacity' | 'gpu_capacity'>): Lease | undefined {
    if (this.#leases.has(experimentId)) return undefined
    const d = demandOf(project)
    if (this.#cpuUsed + d.cpuUnits > UNIT) return undefined
    let gpus: GpuShare[] = []
    if (d.gpuUnits !== undefined) {
      const best = this.#leastLoadedFitting(d.gpuUnits)
      if (best === undefined) return undefined
      gpus = [{ index: best, units: d.gpuUnits }]
    } else if (d.wholeGpus !== undefined) {
      const free = this.#freeWholeGpus()
      if (free.length < d.wholeGpus) return undefined
      gpus = free.slice(0, d.wholeGpus).map((index) => ({ index, units: UNIT }))
    }
    const lease: Lease = { experimentId, projectId: project.id, cpuUnits: d.cpuUnits, gpus }
    this.#hold(lease)
    return lease
  }

  /**
   * Take back a lease that already exists outside this process (a running
   * container found by its labels). It is recorded even if it over-commits:
   * the work is running whether we like it or not.
   */
  adopt(lease: Lease): void {
    if (this.#leases.has(lease.experimentId)) return
    this.#hold(lease)
  }

  /** Release an experiment's lease. Safe to call more than once. */
  release(experimentId: string): boolean {
    const lease = this.#leases.get(experimentId)
    if (!lease) return false
    this.#leases.delete(experimentId)
    this.#cpuUsed -= lease.cpuUnits
    for (const g of lease.gpus) {
      const used = this.#gpuUsed.get(g.index)
      if (used !== undefined) this.#gpuUsed.set(g.index, used - g.units)
    }
    return true
  }

  /** Release every lease whose experiment is not in `live`; returns the released ids. */
  retainOnly(live: ReadonlySet<string>): string[] {
    const dropped = [...this.#leases.keys()].filter((id) => !live.has(id))
    for (const id of dropped) this.release(id)
    return dropped
  }

  leases(): Lease[] {
    return [...this.#leases.values()]
  }

  /** Units in use: machine and per GPU (for /gpus and metrics). */
  usage(): { cpuUnits: number; gpus: Map<number, number> } {
    return { cpuUnits: this.#cpuUsed, gpus: new Map(this.#gpuUsed) }
  }

  #hold(lease: Lease): void {
    this.#leases.set(lease.experimentId, lease)
    this.#cpuUsed += lease.cpuUnits
    // A GPU this machine does not hand out (any more) is not counted: it must never become schedulable.
    for (const g of lease.gpus) {
      const used = this.#gpuUsed.get(g.index)
      if (used !== undefined) this.#gpuUsed.set(g.index, used + g.units)
    }
  }

  /** Spread, not pack: the GPU with the most room, lowest index on a tie. */
  #leastLoadedFitting(units: number): number | undefined {
    let best: number | undefined
    let bestUsed = Infinity
    for (const [index, used] of [...this.#gpuUsed].sort((a, b) => a[0] - b[0])) {
      if (used + units <= UNIT && used < bestUsed) {
        best = index
        bestUsed = used
      }
    }
    return best
  }

  #freeWholeGpus(): number[] {
    return [...this.#gpuUsed]
      .filter(([, used]) => used === 0)
      .map(([index]) => index)
      .sort((a, b) => a - b)
  }
}

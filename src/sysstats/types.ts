/**
 * What FGMachine measures of a running experiment, without anything in the
 * experiment's code: its container's (or process tree's) CPU and memory and,
 * when it holds GPUs, their utilisation and memory (nvidia-smi).
 */

/** One GPU at one moment, as nvidia-smi reports it (the whole GPU, whoever uses it). */
export interface GpuReading {
  /** nvidia-smi's index on the host. */
  index: number
  /** utilization.gpu, percent (0–100). */
  utilPct?: number
  /** memory.used, MiB. */
  memoryUsedMiB?: number
  /** memory.total, MiB. */
  memoryTotalMiB?: number
}

/** One sample of one experiment. A value that could not be read is absent, never 0. */
export interface SystemSample {
  /** When it was taken, ms since the epoch. */
  t: number
  /** CPU time used since the previous sample, in percent of one core (as `docker stats`: 250 = two and a half cores busy). */
  cpuPct?: number
  /** Memory in use, bytes (as `docker stats`: without the reclaimable page cache). */
  memoryBytes?: number
  /** The container's memory limit, bytes, when it has one. */
  memoryLimitBytes?: number
  /** The experiment's GPUs, in the order of its lease; absent when it holds none. */
  gpus?: GpuReading[]
}

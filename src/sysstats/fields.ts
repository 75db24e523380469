/**
 * A run's system totals as readable fields for FGLab's experiment page (it
 * prints each top-level field as text). Pure: no I/O.
 */
import type { Stat, Totals } from './series.js'

const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB']
const MiB = 1024 * 1024

/** `v` to `digits` significant digits, without trailing zeros ("1.20" is "1.2", "80.0" is "80"). */
export function significant(v: number, digits: number): string {
  if (v === 0 || !Number.isFinite(v)) return String(v === 0 ? 0 : v)
  const s = v.toPrecision(digits)
  if (s.includes('e')) return String(Number(s))
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s
}

/** Bytes in binary units, 3 significant digits: "812 MiB", "1.21 GiB" (a unit is used below 1000 of it, so never "1020 MiB"). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes <= 0) return `${bytes > 0 ? bytes : 0} B`
  for (let i = 0; ; i++) {
    const s = significant(bytes / 1024 ** i, 3)
    if (Number(s) < 1000 || i === BINARY_UNITS.length - 1) return `${s} ${BINARY_UNITS[i]}`
  }
}

/** MiB (as nvidia-smi reports) in binary units: "10.2 GiB". */
export const formatMiB = (mib: number): string => formatBytes(mib * MiB)

/** A percentage: whole from 10 up ("87"), 2 significant digits below ("3.4", "0.05"). */
export function formatPercent(pct: number): string {
  if (Math.abs(pct) >= 10) return String(Math.round(pct))
  return significant(pct, 2)
}

/** Percent of one core as cores: "1.5", "4.0"; "0.03" below a tenth. */
function cores(pct: number): string {
  const c = pct / 100
  return c >= 0.095 || c === 0 ? c.toFixed(1) : significant(c, 1)
}

type Gpu = Totals['gpus'][number]

/** "84 % (GPU 0: 90 %, GPU 1: 78 %)": the overall value, then each GPU's when there are several. */
function perGpu<G extends Gpu>(head: string, gpus: G[], several: boolean, each: (g: G) => string): string {
  return several ? `${head} (${gpus.map((g) => `GPU ${g.index}: ${each(g)}`).join(', ')})` : head
}

/** The largest of the GPUs' `pick` (mean or max), with that GPU's total when known: "10.2 GiB of 80 GiB". */
function gpuMemory(gpus: Array<Gpu & { mem: Stat }>, several: boolean, pick: (s: Stat) => number): string {
  const top = gpus.reduce((a, b) => (pick(b.mem) > pick(a.mem) ? b : a))
  const head = `${formatMiB(pick(top.mem))}${top.memTotal !== undefined ? ` of ${formatMiB(top.memTotal)}` : ''}`
  return perGpu(head, gpus, several, (g) => formatMiB(pick(g.mem)))
}

/**
 * Readable summary fields, only for what was measured (none when there were
 * no samples): peak memory, mean and peak CPU, GPU utilisation and memory.
 */
export function systemFields(t: Totals): Record<string, string> {
  const out: Record<string, string> = {}
  if (t.samples === 0) return out
  if (t.mem) {
    /** The most memory the experiment used at once (without the page cache), e.g. "1.21 GiB". */
    out.system_peak_memory = formatBytes(t.mem.max)
  }
  if (t.cpu) {
    /** Its mean CPU use over the run, in percent of one core and in cores, e.g. "153 % (1.5 cores)". */
    out.system_mean_cpu = `${formatPercent(t.cpu.mean)} % (${cores(t.cpu.mean)} cores)`
    /** Its highest CPU use over one sampling interval, e.g. "398 % (4.0 cores)". */
    out.system_peak_cpu = `${formatPercent(t.cpu.max)} % (${cores(t.cpu.max)} cores)`
  }
  // Several GPUs: each one's value in parentheses, whether or not all of them reported this reading.
  const several = t.gpus.length > 1
  const util = t.gpus.filter((g): g is Gpu & { util: Stat } => g.util !== undefined)
  if (util.length > 0) {
    const mean = util.reduce((s, g) => s + g.util.mean, 0) / util.length
    const peak = Math.max(...util.map((g) => g.util.max))
    /** The GPUs' mean utilisation (several: the mean over them, then each one's), e.g. "84 % (GPU 0: 90 %, GPU 1: 78 %)". */
    out.system_gpu_util_mean = perGpu(`${formatPercent(mean)} %`, util, several, (g) => `${formatPercent(g.util.mean)} %`)
    /** The GPUs' highest utilisation (several: the highest of them, then each one's), e.g. "100 % (GPU 0: 100 %, GPU 1: 97 %)". */
    out.system_gpu_util_peak = perGpu(`${formatPercent(peak)} %`, util, several, (g) => `${formatPercent(g.util.max)} %`)
  }
  const mem = t.gpus.filter((g): g is Gpu & { mem: Stat } => g.mem !== undefined)
  if (mem.length > 0) {
    /** The most GPU memory in use on one GPU, of its total when known (several: then each one's peak), e.g. "10.2 GiB of 80 GiB". */
    out.system_gpu_memory_peak = gpuMemory(mem, several, (s) => s.max)
    /** The largest mean GPU memory in use on one GPU, of its total when known (several: then each one's mean), e.g. "9.1 GiB of 80 GiB". */
    out.system_gpu_memory_mean = gpuMemory(mem, several, (s) => s.mean)
  }
  return out
}

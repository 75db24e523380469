/** One GPU as nvidia-smi reports it. */
export interface GpuDevice {
  /** nvidia-smi's (and the NVIDIA container toolkit's) index. */
  index: number
  uuid: string
  name: string
  memoryTotalMiB?: number
  memoryUsedMiB?: number
  utilizationPct?: number
  /** MIG mode when the GPU supports it ("Enabled" / "Disabled"). */
  migMode?: string
}

/** The fields FGMachine asks for, in this order. */
export const QUERY_FIELDS = ['index', 'uuid', 'name', 'memory.total', 'memory.used', 'utilization.gpu', 'mig.mode.current'] as const

export const QUERY_ARGS = [`--query-gpu=${QUERY_FIELDS.join(',')}`, '--format=csv,noheader,nounits']

export class GpuQueryError extends Error {
  override readonly name = 'GpuQueryError'
  readonly code = 'FGM_GPU_QUERY'
}

/** `[N/A]`, `[Not Supported]`, `N/A` and the like: no value. */
function value(field: string | undefined): string | undefined {
  const v = field?.trim()
  if (!v || /^\[?(N\/A|Not Supported|Unknown Error|Insufficient Permissions|GPU requires reset)\]?$/i.test(v)) return undefined
  return v
}

function num(field: string | undefined): number | undefined {
  const v = value(field)
  if (v === undefined) return undefined
  const n = Number(v)
  return Number.isFinite(n) ? n : undefined
}

/**
 * Split one CSV line. nvidia-smi separates fields with ", " and does not quote;
 * GPU names hold no commas, but be lenient: extra fields are joined into the name.
 */
function splitLine(line: string): string[] {
  const parts = line.split(',').map((p) => p.trim())
  const extra = parts.length - QUERY_FIELDS.length
  if (extra > 0) parts.splice(2, extra + 1, parts.slice(2, 3 + extra).join(', '))
  return parts
}

/** Parse the output of `nvidia-smi QUERY_ARGS`. Lines that are not a GPU are errors, said with the line. */
export function parseGpuQuery(stdout: string): GpuDevice[] {
  const gpus: GpuDevice[] = []
  for (const raw of stdout.split(/\r?\n/)) {
    const line = raw.trim()
    if (!line) continue
    const f = splitLine(line)
    const index = num(f[0])
    const uuid = value(f[1])
    if (index === undefined || !Number.isInteger(index) || !uuid?.startsWith('GPU-')) {
      throw new GpuQueryError(`unexpected nvidia-smi output: ${line.slice(0, 200)}`)
    }
    gpus.push({
      index,
      uuid,
      name: value(f[2]) ?? `GPU ${index}`,
      memoryTotalMiB: num(f[3]),
      memoryUsedMiB: num(f[4]),
      utilizationPct: num(f[5]),
      migMode: value(f[6]),
    })
  }
  return gpus.sort((a, b) => a.index - b.index)
}

/** What nvidia-smi's failure says, in one line a user can act on. */
export function explainFailure(text: string): string {
  const t = text.trim()
  if (/driver\/library version mismatch/i.test(t)) {
    return 'NVIDIA driver/library version mismatch (the driver was upgraded without a reboot, or the container has other libraries than the host): reboot the host, or match the versions'
  }
  if (/couldn't communicate with the NVIDIA driver/i.test(t)) {
    return "nvidia-smi couldn't communicate with the NVIDIA driver: is the driver installed and loaded (lsmod | grep nvidia)?"
  }
  if (/No devices were found/i.test(t)) return 'nvidia-smi found no GPUs'
  return t.split(/\r?\n/).find((l) => l.trim())?.trim().slice(0, 300) ?? 'nvidia-smi failed'
}

import { execa } from 'execa'
import type { Logger } from 'pino'
import { withTimeout } from '../util/timeout.js'
import { explainFailure, GpuQueryError, parseGpuQuery, QUERY_ARGS, type GpuDevice } from './nvidia-smi.js'

/** Runs nvidia-smi with these arguments; the one seam to the NVIDIA driver. */
export type NvidiaSmi = (args: readonly string[], timeoutMs: number) => Promise<string>

/**
 * nvidia-smi through execa, with a time limit of our own: execa's `timeout`
 * kills the process but then still waits for its pipes to close, which a
 * child stuck in the driver (or a grandchild holding stdout) never does. On
 * time-out the process is killed, our ends of its pipes closed, and we go on
 * without waiting for it.
 */
export const runNvidiaSmi: NvidiaSmi = async (args, timeoutMs) => {
  const child = execa('nvidia-smi', args, { reject: false, stripFinalNewline: false })
  let r
  try {
    // With reject: false the call itself never rejects: only the time limit does.
    r = await withTimeout(child, timeoutMs, `nvidia-smi did not answer within ${timeoutMs} ms (a hung driver?)`)
  } catch (err) {
    child.kill('SIGKILL')
    child.stdout?.destroy()
    child.stderr?.destroy()
    throw new GpuQueryError((err as Error).message)
  }
  if ((r as { code?: string }).code === 'ENOENT') throw Object.assign(new Error('nvidia-smi not found'), { code: 'ENOENT' })
  if (r.exitCode !== 0) throw new GpuQueryError(explainFailure(`${r.stdout}\n${r.stderr}`))
  return r.stdout
}

/** The UUID of a GPU declared by hand in FGMACHINE_GPUS, where nvidia-smi could not tell its real one. */
export const UNKNOWN_UUID_PREFIX = 'GPU-unknown-'

export interface DiscoveryOptions {
  log: Logger
  /** FGMACHINE_GPUS: a comma list of indices or UUIDs, or "none"; undefined uses every GPU found. */
  override?: string
  nvidiaSmi?: NvidiaSmi
  timeoutMs?: number
}

/**
 * The GPUs this machine hands out. Never throws: a host without GPUs, without
 * nvidia-smi, or with a broken driver has zero GPUs (said once in the log), and
 * FGMachine runs on.
 */
export async function discoverGpus(opts: DiscoveryOptions): Promise<GpuDevice[]> {
  const { log } = opts
  const wanted = parseOverride(opts.override)
  if (wanted === 'none') {
    log.info('FGMACHINE_GPUS=none: no GPUs are handed out')
    return []
  }
  let found: GpuDevice[] = []
  try {
    const out = await (opts.nvidiaSmi ?? runNvidiaSmi)(QUERY_ARGS, opts.timeoutMs ?? 10_000)
    found = parseGpuQuery(out)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'ENOENT') {
      if (!wanted) log.info('no nvidia-smi on this machine: no GPUs (in a container, start it with --gpus all, or set FGMACHINE_GPUS)')
    } else if (/found no GPUs/.test(e.message)) {
      log.info('nvidia-smi found no GPUs')
    } else {
      log.error({ reason: e.message }, 'GPU discovery failed: running with no GPUs until this is fixed and FGMachine restarted')
    }
    if (wanted && wanted.every((w) => typeof w === 'number')) {
      // Declared by hand where nvidia-smi cannot look (e.g. inside a container without GPU access).
      log.warn({ gpus: wanted }, 'using the GPUs FGMACHINE_GPUS names, unchecked: nvidia-smi could not list them')
      return wanted.map((index) => ({ index, uuid: `${UNKNOWN_UUID_PREFIX}${index}`, name: `GPU ${index}` }))
    }
    if (wanted) log.error({ override: opts.override }, 'FGMACHINE_GPUS names GPUs by UUID, which cannot be checked without nvidia-smi: no GPUs')
    return []
  }
  for (const g of found) {
    if (g.migMode === 'Enabled') {
      log.warn({ index: g.index, name: g.name }, 'GPU has MIG enabled: it is handed out whole (all its MIG instances together)')
    }
  }
  let gpus = found
  if (wanted) {
    gpus = found.filter((g) => wanted.some((w) => w === g.index || w === g.uuid))
    const missing = wanted.filter((w) => !found.some((g) => w === g.index || w === g.uuid))
    if (missing.length) log.warn({ missing }, 'FGMACHINE_GPUS names GPUs nvidia-smi does not list; they are left out')
  }
  log.info({ gpus: gpus.map((g) => `${g.index}: ${g.name} (${g.uuid})`) }, `${gpus.length} GPU(s) to hand out`)
  return gpus
}

/** "none", or indices and UUIDs. Throws on anything else (checked at start with the config). */
export function parseOverride(value: string | undefined): 'none' | Array<number | string> | undefined {
  const v = value?.trim()
  if (!v) return undefined
  if (v.toLowerCase() === 'none') return 'none'
  return v.split(',').map((part) => {
    const p = part.trim()
    if (/^\d+$/.test(p)) return Number(p)
    if (/^(GPU|MIG)-[0-9a-zA-Z-]+$/.test(p)) return p
    throw new Error(`FGMACHINE_GPUS must be "none" or a comma list of GPU indices or UUIDs (e.g. 0,2 or GPU-3b2f…), not "${p}"`)
  })
}

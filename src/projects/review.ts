import { existsSync } from 'node:fs'
import type { HostPaths } from '../docker/host-paths.js'
import type { Project } from './schema.js'

export interface ReviewContext {
  /** How many GPUs this machine hands out. */
  gpus: number
  hostPaths: HostPaths
  /** Whether a path exists where FGMachine runs (tests put a stand-in here). */
  exists?: (p: string) => boolean
}

/**
 * What will not work as the user likely meant, in valid entries: said when
 * projects.json is loaded, as warnings (the entries still load).
 */
export function reviewProjects(projects: readonly Project[], ctx: ReviewContext): Array<{ projectId: string; message: string }> {
  const exists = ctx.exists ?? existsSync
  const out: Array<{ projectId: string; message: string }> = []
  for (const p of projects) {
    const warn = (message: string) => out.push({ projectId: p.id, message: `project ${p.id}: ${message}` })
    if (p.gpu_capacity !== undefined && ctx.gpus === 0) {
      warn('asks for GPUs, but this machine has none to give (nvidia-smi found none, or FGMACHINE_GPUS leaves none): it takes no experiments')
    }
    if (!p.image) continue
    for (const [i, v] of p.volumes.entries()) {
      const source = v.split(':')[0]!
      // A named volume, or a path relative to nothing: Docker's business.
      if (!source.startsWith('/')) continue
      if (ctx.hostPaths.inContainer) {
        // A source that is a path in FGMachine's own container: most likely meant as that, not as the host's.
        const host = ctx.hostPaths.toHost(source)
        const mounted = ctx.hostPaths.mounts?.some((m) => m.destination !== '/' && (source === m.destination || source.startsWith(m.destination + '/')))
        if (host !== undefined && host !== source && mounted) {
          warn(
            `volumes[${i}] "${v}": ${source} is passed to Docker as written, so it is read on the host, not in FGMachine's container ` +
              `(where it is ${host} on the host); if you meant that folder, write "${[host, ...v.split(':').slice(1)].join(':')}"`,
          )
        }
      } else if (!exists(source)) {
        warn(`volumes[${i}] "${v}": ${source} does not exist on this host; Docker would create it, empty and owned by root`)
      }
    }
  }
  return out
}

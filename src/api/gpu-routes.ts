import type { FastifyInstance } from 'fastify'
import type { GpuDevice } from '../gpu/nvidia-smi.js'
import type { Scheduler } from '../scheduler/scheduler.js'
import { UNIT } from '../scheduler/units.js'

/** `GET /gpus`: each GPU and what is allocated on it, to which experiments. */
export function gpuRoutes(app: FastifyInstance, gpus: readonly GpuDevice[], scheduler: Scheduler): void {
  app.get('/gpus', async () => {
    const leases = scheduler.leases()
    const used = scheduler.usage().gpus
    return {
      gpus: gpus.map((g) => {
        const allocations = leases.flatMap((l) =>
          l.gpus.filter((s) => s.index === g.index).map((s) => ({ experiment: l.experimentId, project: l.projectId, share: s.units / UNIT })),
        )
        return {
          index: g.index,
          uuid: g.uuid,
          name: g.name,
          memory_total_mib: g.memoryTotalMiB ?? null,
          mig_mode: g.migMode ?? null,
          // Summed in integer units, then divided: three 0.1 shares are 0.3, not 0.30000000000000004.
          allocated: (used.get(g.index) ?? 0) / UNIT,
          allocations,
        }
      }),
    }
  })
}

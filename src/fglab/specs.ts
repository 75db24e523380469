import os from 'node:os'
import type { GpuDevice } from '../gpu/nvidia-smi.js'
import type { MachineSpecs } from './client.js'

/**
 * The machine's description, in the original's shape (docs/PROTOCOL.md, "Specs"):
 * `gpus` is the list of names FGLab's machine page shows; `gpu_details` adds
 * what FGMachine knows of each.
 */
export function machineSpecs(address: string, gpus: readonly GpuDevice[] = [], hostname = os.hostname()): MachineSpecs {
  return {
    address,
    hostname,
    os: { type: os.type(), platform: os.platform(), arch: os.arch(), release: os.release() },
    cpus: os.cpus().map((c) => c.model),
    mem: `${(os.totalmem() / 1024 ** 3).toFixed(1)}GB`,
    gpus: gpus.map((g) => g.name),
    gpu_details: gpus.map((g) => ({ index: g.index, uuid: g.uuid, name: g.name, memory_total_mib: g.memoryTotalMiB ?? null })),
  }
}

import os from 'node:os'
import type { MachineSpecs } from './client.js'

/** The machine's description, in the original's shape (PROTOCOL.md, "Specs"). */
export function machineSpecs(address: string, gpus: string[] = []): MachineSpecs {
  return {
    address,
    hostname: os.hostname(),
    os: { type: os.type(), platform: os.platform(), arch: os.arch(), release: os.release() },
    cpus: os.cpus().map((c) => c.model),
    mem: `${(os.totalmem() / 1024 ** 3).toFixed(1)}GB`,
    gpus,
  }
}

import { mkdtempSync, symlinkSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const FIXTURES = fileURLToPath(new URL('../fixtures/nvidia-smi/', import.meta.url))

/**
 * Put a stand-in `nvidia-smi` first on this process's PATH, printing the named
 * fixture (and exiting with `exitCode`), as a GPU host's would.
 */
export function useStandInNvidiaSmi(fixture: string, exitCode = 0): void {
  const bin = mkdtempSync(path.join(os.tmpdir(), 'fgm-nvsmi-'))
  symlinkSync(path.join(FIXTURES, 'stand-in.sh'), path.join(bin, 'nvidia-smi'))
  process.env.PATH = `${bin}:${process.env.PATH}`
  process.env.FGM_FAKE_NVIDIA_SMI = path.join(FIXTURES, fixture)
  process.env.FGM_FAKE_NVIDIA_SMI_EXIT = String(exitCode)
}

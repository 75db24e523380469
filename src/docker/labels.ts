/**
 * The labels that make a container FGMachine's. Containers are found by these,
 * never by name; after a restart they say what each container holds.
 */
export const LABELS = {
  /** Marks a container as started by FGMachine. */
  managed: 'fgmachine.managed',
  /** FGLab's experiment id (24 hex digits). */
  experiment: 'fgmachine.experiment',
  project: 'fgmachine.project',
  /** FGLab's id of this machine (from specs.json). */
  machine: 'fgmachine.machine',
  /** Machine capacity held, in units (see scheduler/units.ts). */
  cpuUnits: 'fgmachine.cpu-units',
  /** GPUs held: "index:units,index:units". */
  gpus: 'fgmachine.gpus',
  /** The experiment's results folder as FGMachine sees it. */
  results: 'fgmachine.results',
  /** "true" when the project keeps results folders. */
  keepResults: 'fgmachine.keep-results',
  /** The project's run-time limit in seconds, if any. */
  timeout: 'fgmachine.timeout',
} as const

export function gpusLabel(gpus: ReadonlyArray<{ index: number; units: number }>): string {
  return gpus.map((g) => `${g.index}:${g.units}`).join(',')
}

/** The GPUs a `gpus` label holds; undefined when it is not of that form. */
export function parseGpusLabel(value: string): Array<{ index: number; units: number }> | undefined {
  if (value === '') return []
  const out: Array<{ index: number; units: number }> = []
  for (const part of value.split(',')) {
    const m = /^(\d+):(\d+)$/.exec(part)
    if (!m) return undefined
    out.push({ index: Number(m[1]), units: Number(m[2]) })
  }
  return out
}

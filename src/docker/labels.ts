import path from 'node:path'
import type { RunRecord } from '../runner/journal.js'
import type { GpuShare } from '../scheduler/scheduler.js'
import { isObjectId } from '../util/ids.js'

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
  /** "false" when the project turned the system charts off (absent: on). */
  charts: 'fgmachine.system-charts',
  /**
   * The data folder of the FGMachine that made it, as the Docker host sees it:
   * with the engine, the identity of one FGMachine (a lock keeps one per data
   * folder). A copy of specs.json elsewhere has the same FGLab id but not this.
   */
  data: 'fgmachine.data',
} as const

/** Whose a container labelled with this machine's id or data folder is, to an FGMachine of `machineId` and `dataKey`. */
export type Ownership =
  /** This FGMachine's: made by it, or by this data folder under an FGLab id it had before (specs.json lost). */
  | 'ours'
  /** Another FGMachine's that claims the same FGLab id (a copy of its specs.json): never touched. */
  | 'foreign'

export function ownership(labels: Record<string, string>, machineId: string, dataKey: string | undefined): Ownership {
  const data = labels[LABELS.data]
  // Made before containers carried their data folder: the FGLab id is all there is.
  if (!data || dataKey === undefined) return labels[LABELS.machine] === machineId ? 'ours' : 'foreign'
  return data === dataKey ? 'ours' : 'foreign'
}

/** What a container's labels say of its experiment: enough to take it up again with no journal record. */
export type LabelledRun = Pick<RunRecord, 'id' | 'projectId' | 'lease' | 'resultsDir' | 'keepResults' | 'timeoutS' | 'charts'>

/** The labels of an experiment's container. `runFromLabels` reads them back. */
export function runLabels(run: LabelledRun, machineId: string | undefined, dataKey?: string): Record<string, string> {
  return {
    ...(dataKey && { [LABELS.data]: dataKey }),
    [LABELS.managed]: 'true',
    [LABELS.experiment]: run.id,
    [LABELS.project]: run.projectId,
    [LABELS.machine]: machineId ?? '',
    [LABELS.cpuUnits]: String(run.lease.cpuUnits),
    [LABELS.gpus]: gpusLabel(run.lease.gpus),
    [LABELS.results]: run.resultsDir,
    [LABELS.keepResults]: String(run.keepResults),
    [LABELS.timeout]: run.timeoutS === undefined ? '' : String(run.timeoutS),
    ...(run.charts === false && { [LABELS.charts]: 'false' }),
  }
}

/**
 * An experiment from a container's labels, or undefined when they do not make
 * one (no valid id, a results folder that is not the experiment's own, a lease
 * that holds nothing). Only what the labels say: the run record around it
 * (phase, container) is its reader's.
 */
export function runFromLabels(labels: Record<string, string>): LabelledRun | undefined {
  const id = labels[LABELS.experiment]
  const resultsDir = labels[LABELS.results]
  const cpuUnits = Number(labels[LABELS.cpuUnits])
  const gpus = parseGpusLabel(labels[LABELS.gpus] ?? '')
  if (!isObjectId(id) || !resultsDir || !path.isAbsolute(resultsDir) || path.basename(resultsDir) !== id) return undefined
  if (!Number.isInteger(cpuUnits) || cpuUnits < 0 || !gpus || (cpuUnits === 0 && gpus.length === 0)) return undefined
  const projectId = labels[LABELS.project] ?? ''
  const timeoutS = Number(labels[LABELS.timeout])
  return {
    id,
    projectId,
    resultsDir,
    keepResults: labels[LABELS.keepResults] === 'true',
    timeoutS: timeoutS > 0 ? timeoutS : undefined,
    ...(labels[LABELS.charts] === 'false' && { charts: false as const }),
    lease: { experimentId: id, projectId, cpuUnits, gpus },
  }
}

export function gpusLabel(gpus: readonly GpuShare[]): string {
  return gpus.map((g) => `${g.index}:${g.units}`).join(',')
}

/** The GPUs a `gpus` label holds; undefined when it is not of that form. */
export function parseGpusLabel(value: string): GpuShare[] | undefined {
  if (value === '') return []
  const out: GpuShare[] = []
  for (const part of value.split(',')) {
    const m = /^(\d+):(\d+)$/.exec(part)
    if (!m) return undefined
    out.push({ index: Number(m[1]), units: Number(m[2]) })
  }
  return out
}

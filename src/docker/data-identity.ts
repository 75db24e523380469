import { realpathSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { nodeDisk } from '../util/disk.js'
import type { HostPaths } from './host-paths.js'

/**
 * The data folder as the Docker host sees it: with the engine, the identity of
 * one FGMachine (its containers carry it, labels.ts `data`). Undefined while
 * Docker has not told FGMachine its own mounts.
 */
export function dataKeyOf(dataDir: string, hostPaths: HostPaths): string | undefined {
  if (hostPaths.undetermined) return undefined
  // Through symlinks: the same folder named two ways is one folder.
  let real = path.resolve(dataDir)
  try {
    real = realpathSync(real)
  } catch {
    // not made yet
  }
  // A data folder inside FGMachine's container only: its container names it.
  return hostPaths.toHost(real) ?? `container:${hostPaths.containerId}:${real}`
}

export class DataIdentityError extends Error {
  override readonly name = 'DataIdentityError'
  readonly code = 'FGM_DATA_IDENTITY'
}

/**
 * `<data>/identity.json` says where this data folder was made. A folder that
 * finds itself elsewhere is a copy (a copied volume, a restored backup) of
 * another FGMachine's, with its specs.json, journal and outbox: acting on them
 * would adopt, report and remove the other's experiments. Throws, saying what
 * to do; writes the file on a folder's first start.
 */
export async function checkDataIdentity(dataDir: string, dataKey: string): Promise<void> {
  const file = path.join(dataDir, 'identity.json')
  let made: string | undefined
  try {
    made = (JSON.parse(await readFile(file, 'utf8')) as { dataKey?: unknown }).dataKey as string | undefined
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err
  }
  if (typeof made === 'string' && made !== dataKey) {
    throw new DataIdentityError(
      `this data folder (${dataDir}, ${dataKey} to Docker) was made at ${made}: it is a copy of another FGMachine's data folder (a copied volume, a restored backup), ` +
        "with that machine's FGLab id, experiments and reports. Acting on them would adopt, report and remove the other's experiments, so this FGMachine does not start. " +
        `To run this one as a machine of its own, delete specs.json, identity.json, experiments/ and outbox/ in ${dataDir} (it registers with FGLab anew). ` +
        `If you moved the folder here yourself and nothing runs from ${made} any more, delete only ${file}.`,
    )
  }
  // A full disk does not stop the start: it is written at a later one.
  if (made !== dataKey) await nodeDisk.writeAtomic(file, JSON.stringify({ dataKey, since: new Date().toISOString() }, null, 2) + '\n').catch(() => undefined)
}

import { performance } from 'node:perf_hooks'

/** `work()`, its duration (seconds) and its failure (undefined when none) told to `done`, whichever way it ends. */
export async function timed<T>(work: () => Promise<T>, done: (seconds: number, failed: unknown) => void): Promise<T> {
  const t0 = performance.now()
  let failed: unknown
  try {
    return await work()
  } catch (err) {
    failed = err
    throw err
  } finally {
    done((performance.now() - t0) / 1000, failed)
  }
}

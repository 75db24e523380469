/**
 * An FGLab-like dispatcher: as FGLab's batch does, each submission first asks
 * the machine `GET /projects/:id/capacity`; on 200 with capacity ≥ 1 it POSTs
 * `/projects/:id` with the options and `_id`; on 501 (no capacity, or capacity
 * gone between the two calls) it waits a little and asks again. A batch is one
 * such loop over its experiments; several batches share the machine.
 */
import { performance } from 'node:perf_hooks'
import { sleep } from './lib.js'
import type { Options } from './workloads.js'

export interface DispatchStats {
  /** GET capacity calls, and how many answered 501 (or capacity < 1). */
  queries: number
  refused: number
  /** POSTs, and how many answered 501 (capacity taken by another batch in between). */
  posts: number
  postRefused: number
  /** How long each GET capacity took to answer, ms. */
  capacityMs: number[]
}

export const newStats = (): DispatchStats => ({ queries: 0, refused: 0, posts: 0, postRefused: 0, capacityMs: [] })

export function addStats(into: DispatchStats, s: DispatchStats): void {
  into.queries += s.queries
  into.refused += s.refused
  into.posts += s.posts
  into.postRefused += s.postRefused
  into.capacityMs.push(...s.capacityMs)
}

/** One accepted submission, times in epoch ms (to set beside FGLab's calls and the service's log). */
export interface Submission {
  options: Options
  /** The accepted POST: sent, answered. */
  postSentAt: number
  postAnsweredAt: number
}

export interface DispatchOptions {
  url: string
  project: string
  retryMs: number
  stats: DispatchStats
  /** Give up (throw) past this epoch ms. */
  deadline: number
  /** Set when another batch failed: stop. */
  aborted: () => boolean
}

/** Submit a batch's experiments one after another, each as FGLab does (capacity, then start; wait and ask again on 501). */
export async function dispatchBatch(batch: Options[], o: DispatchOptions, accepted: (s: Submission) => void): Promise<void> {
  for (const options of batch) {
    for (;;) {
      if (o.aborted()) return
      if (Date.now() > o.deadline) throw new Error(`dispatcher: experiment n=${options.n} not accepted in time (${o.stats.refused} refusals so far)`)
      const t = performance.now()
      const res = await fetch(`${o.url}/projects/${o.project}/capacity`)
      const body = (await res.json()) as { capacity?: number }
      o.stats.capacityMs.push(performance.now() - t)
      o.stats.queries++
      if (res.status === 200 && typeof body.capacity === 'number' && body.capacity >= 1) {
        const postSentAt = Date.now()
        const post = await fetch(`${o.url}/projects/${o.project}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(options),
        })
        const text = await post.text()
        const postAnsweredAt = Date.now()
        o.stats.posts++
        if (post.status === 200) {
          accepted({ options, postSentAt, postAnsweredAt })
          break
        }
        if (post.status !== 501) throw new Error(`dispatcher: POST of n=${options.n} (${options._id}) answered ${post.status} ${text}`)
        o.stats.postRefused++
      } else if (res.status === 501 || res.status === 200) {
        o.stats.refused++
      } else {
        throw new Error(`dispatcher: GET capacity answered ${res.status} ${JSON.stringify(body)}`)
      }
      await sleep(o.retryMs)
    }
  }
}

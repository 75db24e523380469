import type { Logger } from 'pino'
import type { Project } from '../projects/schema.js'
import type { ContainerClient } from './container-client.js'
import { logPull } from './pull-progress.js'

export interface PreparedImages {
  /** Settles when every pre-pull has ended (each failure is logged, none rejects). */
  pulls: Promise<void>
}

/**
 * After projects.json is loaded: say at once which container projects' images
 * are missing and cannot be pulled (rather than when an experiment starts), and
 * pull in the background those of projects with `prepull: true`, so that their
 * first experiment does not wait. The pulls are the ones experiments share.
 * Resolves once every image was looked at.
 */
export async function prepareImages(projects: Iterable<Project>, docker: ContainerClient, log: Logger): Promise<PreparedImages> {
  const byImage = new Map<string, Project[]>()
  for (const p of projects) if (p.image) byImage.set(p.image, [...(byImage.get(p.image) ?? []), p])
  const pulls: Array<Promise<void>> = []
  await Promise.all(
    [...byImage].map(async ([image, users]) => {
      const ids = users.map((p) => p.id)
      const onWarning = (problem: string) => log.warn({ image, problem }, 'cannot read the registry credentials')
      let status
      try {
        status = await docker.imageStatus(image, { onWarning })
      } catch (err) {
        log.warn({ image, projects: ids, err: (err as Error).message }, 'cannot tell whether the image is here: Docker did not answer')
        return
      }
      if (status === 'present') return
      if (typeof status === 'object') {
        log.warn({ image, projects: ids, reason: status.problem }, 'image not present locally and cannot be pulled')
        return
      }
      if (!users.some((p) => p.prepull)) {
        log.info({ image, projects: ids }, 'image not present locally: it is pulled when an experiment first needs it')
        return
      }
      log.info({ image, projects: ids }, 'pre-pulling image')
      pulls.push(
        docker.ensureImage(image, { onProgress: (p) => logPull(log, p), onWarning }).catch((err: unknown) => {
          log.warn({ image, projects: ids, err: (err as Error).message }, 'pre-pulling image failed: its experiments will try again')
        }),
      )
    }),
  )
  return { pulls: Promise.all(pulls).then(() => undefined) }
}

import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import type { ProjectStore } from '../projects/store.js'
import type { Admission } from '../runner/admission.js'
import type { ExperimentManager } from '../runner/experiment-manager.js'
import { BadRequestError } from '../runner/errors.js'
import { isObjectId, isProjectId } from '../util/ids.js'

export interface ProtocolDeps {
  projects: ProjectStore
  admission: Admission
  experiments: ExperimentManager
  machineUrl: string
  machineId: () => string | undefined
  hostname: () => string
}

const ProjectParams = z.object({ projectId: z.string() })
const ExperimentParams = z.object({ id: z.string() })
const TemplateBody = z.object({ project_id: z.string({ error: 'project_id is required' }) }, { error: 'body must be {"project_id": "<id>"}' })

function projectIdFrom(params: unknown): string {
  const { projectId } = ProjectParams.parse(params)
  if (!isProjectId(projectId)) throw new BadRequestError('project id must be letters, digits, "_" or "-"')
  return projectId
}

/** The calls FGLab and its pages make to a machine (docs/PROTOCOL.md). Thin: validate, call the domain, answer. */
export function protocolRoutes(app: FastifyInstance, deps: ProtocolDeps): void {
  app.get('/projects/:projectId/capacity', async (req) => {
    const capacity = deps.admission.capacity(projectIdFrom(req.params))
    return { capacity, address: deps.machineUrl, _id: deps.machineId() }
  })

  app.post('/projects/:projectId', async (req, reply) => {
    const projectId = projectIdFrom(req.params)
    const body = req.body
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequestError('body must be a JSON object of options with _id')
    // The answer (the body, echoed) is made before the start: once an experiment is
    // started, nothing may fail its answer, or FGLab deletes an experiment that runs.
    const answer = JSON.stringify(body)
    await deps.admission.start(projectId, body as Record<string, unknown>)
    return reply.type('application/json; charset=utf-8').send(answer)
  })

  app.put('/projects', async (req) => {
    const r = TemplateBody.safeParse(req.body)
    if (!r.success) throw new BadRequestError(r.error.issues[0]!.message)
    const id = r.data.project_id
    if (!isProjectId(id)) throw new BadRequestError('project_id must be letters, digits, "_" or "-"')
    const added = await deps.projects.addTemplate(id)
    return {
      msg: added ? `Project ID ${id} template added - please adjust on ${deps.hostname()}` : `Project ID ${id} already exists`,
    }
  })

  app.post('/experiments/:id/kill', async (req) => {
    const { id } = ExperimentParams.parse(req.params)
    if (!isObjectId(id)) throw new BadRequestError('experiment id must be 24 hex digits')
    // The original's answer whether or not the experiment runs here (the page only shows it).
    deps.experiments.kill(id)
    return { status: 'killed' }
  })

  app.post('/capacity/reset', async () => {
    const { released, held } = deps.experiments.resetCapacity()
    return { msg: 'Capacity reset', released, running: held }
  })
}

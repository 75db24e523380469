import os from 'node:os'
import cors from '@fastify/cors'
import websocket from '@fastify/websocket'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { ZodError } from 'zod'
import { tokenAuth } from './api/auth.js'
import { gpuRoutes } from './api/gpu-routes.js'
import { healthRoutes, type HealthProbes } from './api/health-routes.js'
import { logSocket } from './api/log-socket.js'
import { protocolRoutes } from './api/protocol-routes.js'
import type { LogHub } from './logs/log-hub.js'
import type { ProjectStore } from './projects/store.js'
import { ProjectsFileError } from './projects/store.js'
import { Admission } from './runner/admission.js'
import { NoCapacityError } from './runner/errors.js'
import type { ExperimentManager } from './runner/experiment-manager.js'
import type { Scheduler } from './scheduler/scheduler.js'
import type { GpuDevice } from './gpu/nvidia-smi.js'

export interface AppServices {
  projects: ProjectStore
  scheduler: Scheduler
  experiments: ExperimentManager
  logHub: LogHub
  gpus?: readonly GpuDevice[]
  machineUrl: string
  machineId: () => string | undefined
  /** The machine's name as FGLab shows it. */
  hostname?: () => string
  health?: Omit<HealthProbes, 'machineId'>
}

export interface AppOptions {
  logger?: Logger
  /** Largest request body (bytes). */
  bodyLimit?: number
  /** FGMACHINE_TOKEN: when set, POST and PUT calls need it (src/api/auth.ts). */
  token?: string
}

/** Build the HTTP app from the services it is given. Listens on nothing; touches no Docker. */
export async function buildApp(services: AppServices, opts: AppOptions = {}): Promise<FastifyInstance> {
  const log = opts.logger
  const app = Fastify({
    // Fastify's own lines (two per request, the healthcheck's included, and one "listening" per
    // interface) only with LOG_LEVEL=debug; its warnings and errors always.
    loggerInstance: log?.child({ component: 'http' }, { level: log.isLevelEnabled('debug') ? log.level : 'warn' }),
    bodyLimit: opts.bodyLimit ?? 256 * 1024,
    // Ids are validated by the routes; `__proto__`/`constructor` in bodies are refused by the JSON parser.
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
  }) as unknown as FastifyInstance

  // The FGLab pages call the machine cross-origin (Add to Machine, Kill, Reset capacity).
  await app.register(cors, { origin: '*', methods: ['GET', 'POST', 'PUT', 'OPTIONS'] })
  await app.register(websocket, { options: { maxPayload: 64 * 1024 } })
  tokenAuth(app, opts.token)

  app.setErrorHandler((err, req, reply) => {
    const e = err as Error & { statusCode?: number; code?: string }
    if (e instanceof ZodError) return reply.status(400).send({ error: e.issues.map((i) => i.message).join('; ') })
    if (e instanceof ProjectsFileError) return reply.status(409).send({ error: e.message })
    // FGLab's shape, and why: FGLab reads only the status; people and scripts read the reason.
    if (e instanceof NoCapacityError) return reply.status(501).send({ error: e.message, cause: e.refusal.cause, reason: e.refusal.reason })
    const status = e.statusCode ?? 500
    if (status >= 500 && status !== 501) req.log.error({ err }, 'request failed')
    return reply.status(status).send({ error: status === 500 ? 'Internal error' : e.message })
  })
  app.setNotFoundHandler((req, reply) => reply.status(404).send({ error: `${req.method} ${req.url} is not an FGMachine route` }))

  protocolRoutes(app, {
    projects: services.projects,
    admission: new Admission({ projects: services.projects, scheduler: services.scheduler, experiments: services.experiments, log: log?.child({ component: 'admission' }) ?? app.log }),
    experiments: services.experiments,
    machineUrl: services.machineUrl,
    machineId: services.machineId,
    hostname: services.hostname ?? (() => os.hostname()),
  })
  gpuRoutes(app, services.gpus ?? [], services.scheduler)
  if (services.health) healthRoutes(app, { ...services.health, machineId: services.machineId })
  logSocket(app, services.logHub)
  return app
}

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
import { metricsRoutes } from './api/metrics-routes.js'
import { protocolRoutes } from './api/protocol-routes.js'
import type { LogHub } from './logs/log-hub.js'
import type { ProjectStore } from './projects/store.js'
import { ProjectsFileError } from './projects/store.js'
import { Admission } from './runner/admission.js'
import { NoCapacityError } from './runner/errors.js'
import type { ExperimentManager } from './runner/experiment-manager.js'
import type { Scheduler } from './scheduler/scheduler.js'
import type { GpuDevice } from './gpu/nvidia-smi.js'
import type { Registry } from 'prom-client'

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
  /** FGMachine's metrics registry (src/metrics.ts): `GET /metrics` answers it; no such route without it. */
  metrics?: Registry
}

/**
 * The HTTP edge: how long a client may take and how many may be connected at
 * once, so that slow or stuck clients (a slow-loris sending a header line now
 * and then, a connection that sends nothing) cannot hold the machine's
 * sockets. FGLab's calls and its pages' are small and quick; the one
 * long-lived connection, the pages' WebSocket on `/` (src/api/log-socket.ts),
 * is out of reach of the time limits: they stop applying once a connection is
 * upgraded (and `ws` turns the idle timer off), so a page stays "online" for as
 * long as it is open, whether output flows or not.
 */
export const HTTP_LIMITS = {
  /**
   * A request's line and headers must have arrived this long after its first
   * byte, else 408 and the connection is closed: a slow-loris is closed within
   * this plus `checkEveryMs` (25 s). A browser or FGLab sends its headers at once.
   */
  headersTimeoutMs: 20_000,
  /** The whole request, body included (256 KiB at most: under 6 KB/s suffices), within this; else 408. */
  requestTimeoutMs: 45_000,
  /** How often Node looks for requests past the two limits above (its default, 30 s, would add up to that much). */
  checkEveryMs: 5_000,
  /**
   * A connection with no traffic either way for this long is closed: one that
   * connects and never sends a byte (the header timeout starts at the first),
   * or a client that stops reading its answer. Answers take at most seconds
   * (`/health` waits 3 s for Docker and FGLab).
   */
  idleTimeoutMs: 30_000,
  /**
   * An idle keep-alive connection is closed this long after its last answer
   * (Node tells the client in `Keep-Alive: timeout=…`, so it does not reuse it
   * after). FGLab asks capacity and then starts within moments.
   */
  keepAliveTimeoutMs: 30_000,
  /**
   * At most this many connections at once, WebSockets (one per open FGLab page)
   * included; beyond it new ones are closed at once (and said in the log). A
   * lab's pages and FGLab need a few dozen; this bounds sockets and memory
   * (tens of MB) against a flood.
   */
  maxConnections: 1000,
}
export type HttpLimits = typeof HTTP_LIMITS

/** Request bodies nesting `{` and `[` deeper than this are refused (400) before anything is done with them. */
export const MAX_BODY_DEPTH = 32

/** Whether a JSON text nests `{` and `[` deeper than `max`: counted on the text, before it is parsed. */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++ // \ escapes the next character (\" included)
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true
    } else if (c === 0x7d || c === 0x5d) depth--
  }
  return false
}

export interface AppOptions {
  logger?: Logger
  /** Largest request body (bytes). */
  bodyLimit?: number
  /** FGMACHINE_TOKEN: when set, POST and PUT calls need it (src/api/auth.ts). */
  token?: string
  /** HTTP_LIMITS, some of them otherwise (tests). */
  http?: Partial<HttpLimits>
}

const DROPS_LOGGED_EVERY_MS = 60_000

/** Build the HTTP app from the services it is given. Listens on nothing; touches no Docker. */
export async function buildApp(services: AppServices, opts: AppOptions = {}): Promise<FastifyInstance> {
  const log = opts.logger
  const limits = { ...HTTP_LIMITS, ...opts.http }
  const app = Fastify({
    // Fastify's own lines (two per request, the healthcheck's included, and one "listening" per
    // interface) only with LOG_LEVEL=debug; its warnings and errors always.
    loggerInstance: log?.child({ component: 'http' }, { level: log.isLevelEnabled('debug') ? log.level : 'warn' }),
    bodyLimit: opts.bodyLimit ?? 256 * 1024,
    // Ids are validated by the routes; `__proto__`/`constructor` in bodies are refused by the JSON parser.
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    http: { headersTimeout: limits.headersTimeoutMs, requestTimeout: limits.requestTimeoutMs, connectionsCheckingInterval: limits.checkEveryMs },
  }) as unknown as FastifyInstance
  app.server.maxConnections = limits.maxConnections
  let dropsLogged = -Infinity
  let dropped = 0
  app.server.on('drop', () => {
    dropped++
    if (Date.now() - dropsLogged < DROPS_LOGGED_EVERY_MS) return
    dropsLogged = Date.now()
    app.log.warn({ maxConnections: limits.maxConnections, dropped }, `${limits.maxConnections} connections are open: new ones are closed until some end`)
    dropped = 0
  })

  // JSON bodies as Fastify parses them (__proto__ and constructor refused), once their depth is known to be sane:
  // a body nested thousands deep would parse, then fail whatever walks it (the answer, which echoes it).
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (nestsDeeperThan(body as string, MAX_BODY_DEPTH)) {
      done(Object.assign(new Error(`the body nests deeper than ${MAX_BODY_DEPTH} levels of {} and []: options are plain values, lists or shallow objects`), { statusCode: 400 }), undefined)
      return
    }
    parseJson(req, body as string, done)
  })

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
  if (services.metrics) metricsRoutes(app, services.metrics)
  logSocket(app, services.logHub)
  return app
}

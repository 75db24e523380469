import type { FastifyInstance } from 'fastify'

export interface HealthProbes {
  /** Resolves when Docker answers; rejects with the reason otherwise. */
  docker: () => Promise<void>
  /** Resolves when FGLab answers; rejects with the reason otherwise. */
  fglab: () => Promise<void>
  machineId: () => string | undefined
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const late = new Promise<never>((_, reject) => {
    setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms).unref()
  })
  return Promise.race([p, late])
}

function probe(p: Promise<void>, what: string): Promise<{ ok: true } | { ok: false; error: string }> {
  return withTimeout(p, 3000, what).then(
    () => ({ ok: true as const }),
    (err: Error) => ({ ok: false as const, error: err.message }),
  )
}

/**
 * `GET /health`: 200 while FGMachine can run experiments (Docker answers),
 * `"status": "degraded"` when FGLab does not (reports wait in the outbox);
 * 503 when Docker does not. The image's HEALTHCHECK calls it.
 */
export function healthRoutes(app: FastifyInstance, probes: HealthProbes): void {
  app.get('/health', async (_req, reply) => {
    const [docker, fglab] = await Promise.all([probe(probes.docker(), 'Docker'), probe(probes.fglab(), 'FGLab')])
    const status = !docker.ok ? 'unhealthy' : fglab.ok ? 'ok' : 'degraded'
    return reply.status(docker.ok ? 200 : 503).send({ status, docker, fglab, machine_id: probes.machineId() ?? null })
  })
}

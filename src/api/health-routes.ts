import type { FastifyInstance } from 'fastify'

export interface HealthProbes {
  /** Resolves when Docker answers; rejects with the reason otherwise. */
  docker: () => Promise<void>
  /** Whether FGLab answers. */
  fglab: () => Promise<boolean>
  machineId: () => string | undefined
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const late = new Promise<never>((_, reject) => {
    setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms).unref()
  })
  return Promise.race([p, late])
}

/**
 * `GET /health`: 200 while FGMachine can run experiments (Docker answers),
 * `"status": "degraded"` when FGLab does not (reports wait in the outbox);
 * 503 when Docker does not. The image's HEALTHCHECK calls it.
 */
export function healthRoutes(app: FastifyInstance, probes: HealthProbes): void {
  app.get('/health', async (_req, reply) => {
    const [docker, fglab] = await Promise.all([
      withTimeout(probes.docker(), 3000, 'Docker').then(
        () => ({ ok: true as const }),
        (err: Error) => ({ ok: false as const, error: err.message }),
      ),
      probes.fglab().catch(() => false),
    ])
    const status = !docker.ok ? 'unhealthy' : fglab ? 'ok' : 'degraded'
    return reply.status(docker.ok ? 200 : 503).send({ status, docker, fglab: { ok: fglab }, machine_id: probes.machineId() ?? null })
  })
}

import type { FastifyInstance } from 'fastify'

export interface HealthProbes {
  /** Resolves when Docker answers; rejects with the reason otherwise. */
  docker: () => Promise<void>
  /** Resolves when FGLab answers; rejects with the reason otherwise. */
  fglab: () => Promise<void>
  machineId: () => string | undefined
  /**
   * Whether FGLab knows this machine: registered, or why not, and whether
   * FGLab answered (it refused or does not know the machine) or was not reached.
   */
  registration?: () => { ok: true } | { ok: false; error: string; fglabAnswered: boolean }
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
 * `GET /health`: 200 while FGMachine can run experiments (Docker answers) and
 * FGLab knows it; `"status": "degraded"` when FGLab does not answer (reports
 * wait in the outbox; registration waits for FGLab); 503 `"unhealthy"` when
 * Docker does not answer, or when FGLab answers but this machine is not
 * registered (FGLab refuses or garbles the registration, or no longer knows
 * the machine and registering again has not succeeded): FGLab then sends it
 * no experiments, and someone has to look. The image's HEALTHCHECK calls it:
 * FGLab merely down (at first start too) leaves the container healthy.
 */
export function healthRoutes(app: FastifyInstance, probes: HealthProbes): void {
  app.get('/health', async (_req, reply) => {
    const [docker, fglab] = await Promise.all([probe(probes.docker(), 'Docker'), probe(probes.fglab(), 'FGLab')])
    const reg = probes.registration?.()
    const registration = reg && (reg.ok ? { ok: true } : { ok: false, error: reg.error })
    const status = !docker.ok || (reg && !reg.ok && reg.fglabAnswered) ? 'unhealthy' : fglab.ok && (reg?.ok ?? true) ? 'ok' : 'degraded'
    return reply.status(status === 'unhealthy' ? 503 : 200).send({ status, docker, fglab, ...(registration && { registration }), machine_id: probes.machineId() ?? null })
  })
}

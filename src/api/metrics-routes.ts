import type { FastifyInstance } from 'fastify'
import type { Registry } from 'prom-client'

/**
 * `GET /metrics`: FGMachine's metrics in the Prometheus text format (src/metrics.ts).
 * Open like every GET: FGMACHINE_TOKEN guards POST and PUT only (README, "Metrics").
 */
export function metricsRoutes(app: FastifyInstance, registry: Registry): void {
  app.get('/metrics', async (_req, reply) => {
    const text = await registry.metrics()
    return reply.header('content-type', registry.contentType).header('cache-control', 'no-store').send(text)
  })
}

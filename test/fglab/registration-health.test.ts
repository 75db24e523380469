import Fastify from 'fastify'
import t from 'tap'
import { healthRoutes, type HealthProbes } from '../../src/api/health-routes.js'

/** GET /health of an app with these probes. */
async function health(probes: Partial<HealthProbes>) {
  const app = Fastify()
  healthRoutes(app, { docker: async () => {}, fglab: async () => {}, machineId: () => 'aaaaaaaaaaaaaaaaaaaaaaaa', ...probes })
  try {
    const res = await app.inject({ method: 'GET', url: '/health' })
    return { status: res.statusCode, body: res.json() as Record<string, unknown> }
  } finally {
    await app.close()
  }
}

const down = async () => {
  throw new Error('FGLab unreachable (ECONNREFUSED)')
}

t.test('/health and registration', async (t) => {
  t.same(await health({ registration: () => ({ ok: true }) }), {
    status: 200,
    body: { status: 'ok', docker: { ok: true }, fglab: { ok: true }, registration: { ok: true }, machine_id: 'aaaaaaaaaaaaaaaaaaaaaaaa' },
  }, 'registered: ok')

  const unknown = 'not registered: FGLab no longer knows machine aaaaaaaaaaaaaaaaaaaaaaaa (deleted in FGLab?); registering again failed: FGLab answered 502'
  t.same(await health({ machineId: () => undefined, registration: () => ({ ok: false, error: unknown, fglabAnswered: true }) }), {
    status: 503,
    body: { status: 'unhealthy', docker: { ok: true }, fglab: { ok: true }, registration: { ok: false, error: unknown }, machine_id: null },
  }, 'FGLab answers but does not know the machine: unhealthy, with the reason')

  const garbage = "not registered: FGLab's answer to the registration has no machine _id (not JSON): <html>"
  t.match(await health({ machineId: () => undefined, registration: () => ({ ok: false, error: garbage, fglabAnswered: true }) }), {
    status: 503,
    body: { status: 'unhealthy', registration: { ok: false, error: garbage } },
  }, 'FGLab answers garbage to the registration: unhealthy')

  const unreachable = 'not registered: POST /api/v1/machines: FGLab unreachable (ECONNREFUSED)'
  t.same(await health({ machineId: () => undefined, fglab: down, registration: () => ({ ok: false, error: unreachable, fglabAnswered: false }) }), {
    status: 200,
    body: {
      status: 'degraded',
      docker: { ok: true },
      fglab: { ok: false, error: 'FGLab unreachable (ECONNREFUSED)' },
      registration: { ok: false, error: unreachable },
      machine_id: null,
    },
  }, 'FGLab merely down at first start: degraded, not unhealthy (the image HEALTHCHECK passes)')

  t.match(await health({ machineId: () => undefined, registration: () => ({ ok: false, error: 'not registered yet: registering with FGLab', fglabAnswered: false }) }), {
    status: 200,
    body: { status: 'degraded', fglab: { ok: true }, registration: { ok: false } },
  }, 'registering, FGLab up: degraded until it is done')

  t.match(await health({ docker: down, registration: () => ({ ok: true }) }), { status: 503, body: { status: 'unhealthy' } }, 'Docker down: unhealthy, as before')
  t.same((await health({ fglab: down })).body, { status: 'degraded', docker: { ok: true }, fglab: { ok: false, error: 'FGLab unreachable (ECONNREFUSED)' }, machine_id: 'aaaaaaaaaaaaaaaaaaaaaaaa' }, 'without a registration probe: the shape of before')
})

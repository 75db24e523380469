import { pino } from 'pino'
import t from 'tap'
import { buildApp } from '../../src/app.js'
import { LogHub } from '../../src/logs/log-hub.js'
import { Metrics } from '../../src/metrics.js'
import type { ProjectStore } from '../../src/projects/store.js'
import type { ExperimentManager } from '../../src/runner/experiment-manager.js'
import { Scheduler } from '../../src/scheduler/scheduler.js'
import { LogSink } from '../helpers/harness.js'
import { parseExposition, sumOf } from '../helpers/prometheus.js'

async function appWith(metrics: Metrics | undefined, scheduler: Scheduler, token?: string) {
  const app = await buildApp(
    {
      projects: { get: () => undefined } as unknown as ProjectStore,
      scheduler,
      experiments: {} as unknown as ExperimentManager,
      logHub: new LogHub(),
      machineUrl: 'http://machine:5081',
      machineId: () => 'm1',
      hostname: () => 'box',
      metrics: metrics?.registry,
    },
    { logger: pino({ level: 'warn' }, new LogSink()), token },
  )
  return app
}

t.test('GET /metrics answers the Prometheus text format, read afresh at each scrape', async (t) => {
  const metrics = new Metrics()
  const scheduler = new Scheduler([0])
  metrics.observe({ scheduler })
  const app = await appWith(metrics, scheduler)
  t.teardown(() => app.close())

  let res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4; charset=utf-8$/)
  let { samples } = parseExposition(res.body)
  t.equal(sumOf(samples, 'fgmachine_experiments_started_total'), 0)
  t.equal(sumOf(samples, 'fgmachine_capacity_used_ratio'), 0)
  t.ok(sumOf(samples, 'fgmachine_process_resident_memory_bytes') > 0, 'process metrics on the same registry')

  metrics.experimentsStarted.inc()
  metrics.ended({ exitCode: 1, endedMs: 2000 }, false, 1000)
  t.ok(scheduler.reserve('a', { id: 'p', capacity: 0.25, gpu_capacity: 0.5 }))
  res = await app.inject({ method: 'GET', url: '/metrics' })
  ;({ samples } = parseExposition(res.body))
  t.equal(sumOf(samples, 'fgmachine_experiments_started_total'), 1)
  t.equal(sumOf(samples, 'fgmachine_experiments_ended_total', { status: 'fail', reason: 'exit_code' }), 1)
  t.equal(sumOf(samples, 'fgmachine_experiment_duration_seconds_count'), 1)
  t.equal(sumOf(samples, 'fgmachine_capacity_used_ratio'), 0.25)
  t.equal(sumOf(samples, 'fgmachine_capacity_free_ratio'), 0.75)
  t.equal(sumOf(samples, 'fgmachine_gpu_allocated_ratio', { gpu: '0' }), 0.5)
})

t.test('FGMACHINE_TOKEN does not guard /metrics (a GET), while it still guards POST', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const app = await appWith(metrics, new Scheduler(), 'secret')
  t.teardown(() => app.close())
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200, 'open without the token')
  t.doesNotThrow(() => parseExposition(res.body))
  const post = await app.inject({ method: 'POST', url: '/metrics' })
  t.equal(post.statusCode, 401, 'the guard is on')
})

t.test('no registry, no route', async (t) => {
  const app = await appWith(undefined, new Scheduler())
  t.teardown(() => app.close())
  t.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 404)
})

import t from 'tap'
import { FglabError } from '../src/fglab/client.js'
import { endLabels, fglabErrorKind, Metrics } from '../src/metrics.js'
import { Scheduler } from '../src/scheduler/scheduler.js'
import { has, parseExposition, sumOf } from './helpers/prometheus.js'

const scrape = async (m: Metrics) => parseExposition(await m.registry.metrics()).samples

t.test('how an end is labelled: the FGLab status, then the first cause that applies', async (t) => {
  t.same(endLabels({ exitCode: 0 }, false), { status: 'success', reason: 'none' })
  t.same(endLabels({ exitCode: 0 }, true), { status: 'fail', reason: 'killed' })
  t.same(endLabels({ exitCode: 0, timedOut: true }, false), { status: 'fail', reason: 'timeout' })
  t.same(endLabels({ exitCode: 137, oomKilled: true, error: 'out of memory' }, false), { status: 'fail', reason: 'oom' })
  t.same(endLabels({ exitCode: null, error: 'failed to start: no such image' }, false), { status: 'fail', reason: 'error' })
  t.same(endLabels({ exitCode: 3 }, false), { status: 'fail', reason: 'exit_code' })
})

t.test('FGLab failures by kind', async (t) => {
  t.equal(fglabErrorKind(new FglabError('x', undefined, true)), 'unreachable')
  t.equal(fglabErrorKind(new FglabError('x', 404, false)), 'http_4xx')
  t.equal(fglabErrorKind(new FglabError('x', 502, true)), 'http_5xx')
  t.equal(fglabErrorKind(new Error('ENOENT')), 'other')
})

t.test('every metric is in the exposition with its help, prefixed fgmachine_, on a registry of its own', async (t) => {
  const m = new Metrics()
  const { samples, types, help } = parseExposition(await m.registry.metrics())
  for (const [name, type] of [
    ['fgmachine_experiments_started_total', 'counter'],
    ['fgmachine_experiments_ended_total', 'counter'],
    ['fgmachine_experiments_running', 'gauge'],
    ['fgmachine_experiment_duration_seconds', 'histogram'],
    ['fgmachine_container_start_seconds', 'histogram'],
    ['fgmachine_submit_to_running_seconds', 'histogram'],
    ['fgmachine_image_pulls_total', 'counter'],
    ['fgmachine_image_pull_seconds', 'histogram'],
    ['fgmachine_image_pull_bytes_total', 'counter'],
    ['fgmachine_reports_given_up_total', 'counter'],
    ['fgmachine_fglab_request_errors_total', 'counter'],
    ['fgmachine_fglab_request_seconds', 'histogram'],
    ['fgmachine_report_seconds', 'histogram'],
    ['fgmachine_docker_request_seconds', 'histogram'],
    ['fgmachine_docker_request_errors_total', 'counter'],
    ['fgmachine_capacity_used_ratio', 'gauge'],
    ['fgmachine_capacity_free_ratio', 'gauge'],
    ['fgmachine_gpu_allocated_ratio', 'gauge'],
    ['fgmachine_outbox_entries', 'gauge'],
    ['fgmachine_outbox_bytes', 'gauge'],
    ['fgmachine_process_resident_memory_bytes', 'gauge'],
    ['fgmachine_nodejs_eventloop_lag_seconds', 'gauge'],
  ]) {
    t.equal(types.get(name!), type, `${name} is a ${type}`)
    t.ok(help.get(name!)?.length, `${name} has help text`)
  }
  t.same([...types.keys()].filter((n) => !n.startsWith('fgmachine_')), [], 'every name is prefixed')
  t.ok(has(samples, 'fgmachine_process_resident_memory_bytes'))
  t.equal(sumOf(samples, 'fgmachine_experiments_ended_total', { status: 'fail', reason: 'oom' }), 0, 'each series is there from 0')
  t.equal(new Metrics({ processMetrics: false }).registry === m.registry, false)
  t.notOk(has(await scrape(new Metrics({ processMetrics: false })), 'fgmachine_process_resident_memory_bytes'), 'process metrics can be left out')
})

t.test('counters and histograms move as experiments start and end', async (t) => {
  const m = new Metrics({ processMetrics: false })
  m.experimentsStarted.inc()
  m.experimentsRunning.inc()
  m.ended({ exitCode: 0, endedMs: 61_500 }, false, 1_500)
  m.ended({ exitCode: 2, endedMs: 10_000 }, false, 9_000)
  m.ended({ exitCode: null, error: 'failed to start: x' }, false)
  m.pulled(true, 12, 5_000_000)
  m.pulled(false, 0.5)
  m.reportsGivenUp.inc()
  m.fglabRequested('update', 0.02, new FglabError('x', 503, true))
  m.fglabRequested('files', 0.5)
  m.fglabRequested('register', 3, new FglabError('down', undefined, true))
  m.dockerRequested('create', 0.2, true)
  m.dockerRequested('start', 1.5, false)
  m.reportLatency.observe(0.3)
  const s = await scrape(m)
  t.equal(sumOf(s, 'fgmachine_experiments_started_total'), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_running'), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'success', reason: 'none' }), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'fail', reason: 'exit_code' }), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'fail', reason: 'error' }), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'fail' }), 2)
  t.equal(sumOf(s, 'fgmachine_experiment_duration_seconds_count'), 2, 'a run that never started has no duration')
  t.equal(sumOf(s, 'fgmachine_experiment_duration_seconds_sum'), 61)
  t.equal(sumOf(s, 'fgmachine_experiment_duration_seconds_bucket', { le: '10' }), 1, 'the 1 s run is in the 10 s bucket, the 60 s one not')
  t.equal(sumOf(s, 'fgmachine_experiment_duration_seconds_bucket', { le: '60' }), 2, 'the 60 s run is in the 60 s bucket')
  t.equal(sumOf(s, 'fgmachine_experiment_duration_seconds_bucket', { le: '+Inf' }), 2)
  t.equal(sumOf(s, 'fgmachine_image_pulls_total', { result: 'success' }), 1)
  t.equal(sumOf(s, 'fgmachine_image_pulls_total', { result: 'fail' }), 1)
  t.equal(sumOf(s, 'fgmachine_image_pull_seconds_sum'), 12.5)
  t.equal(sumOf(s, 'fgmachine_image_pull_bytes_total'), 5_000_000)
  t.equal(sumOf(s, 'fgmachine_reports_given_up_total'), 1)
  t.equal(sumOf(s, 'fgmachine_fglab_request_errors_total', { kind: 'http_5xx', call: 'update' }), 1)
  t.equal(sumOf(s, 'fgmachine_fglab_request_errors_total', { kind: 'unreachable', call: 'register' }), 1, 'registration calls count too')
  t.equal(sumOf(s, 'fgmachine_fglab_request_errors_total'), 2, 'an answered request is no error')
  t.equal(sumOf(s, 'fgmachine_fglab_request_seconds_count'), 3, 'every request timed, failed or not')
  t.equal(sumOf(s, 'fgmachine_fglab_request_seconds_sum', { call: 'files' }), 0.5)
  t.equal(sumOf(s, 'fgmachine_docker_request_seconds_count'), 2)
  t.equal(sumOf(s, 'fgmachine_docker_request_errors_total', { op: 'start' }), 1)
  t.equal(sumOf(s, 'fgmachine_docker_request_errors_total', { op: 'create' }), 0)
  t.equal(sumOf(s, 'fgmachine_report_seconds_count'), 1)
})

t.test('capacity, GPUs and the outbox are read when scraped', async (t) => {
  const m = new Metrics({ processMetrics: false })
  const scheduler = new Scheduler([0, 1])
  let pending = 0
  let bytes = 0
  m.observe({ scheduler, outbox: { pending: () => pending, bytes: () => bytes } })
  let s = await scrape(m)
  t.equal(sumOf(s, 'fgmachine_capacity_used_ratio'), 0)
  t.equal(sumOf(s, 'fgmachine_capacity_free_ratio'), 1)
  t.equal(sumOf(s, 'fgmachine_gpu_allocated_ratio', { gpu: '1' }), 0, 'an idle GPU has its series')
  t.ok(scheduler.reserve('a', { id: 'p', capacity: 0.3, gpu_capacity: 0.5 }))
  t.ok(scheduler.reserve('b', { id: 'p', capacity: 0.1, gpu_capacity: 0.25 }))
  pending = 3
  bytes = 4096
  s = await scrape(m)
  t.equal(sumOf(s, 'fgmachine_capacity_used_ratio'), 0.4, 'summed in units: 0.4, not 0.30000000000000004 + 0.1')
  t.equal(sumOf(s, 'fgmachine_capacity_free_ratio'), 0.6)
  t.equal(sumOf(s, 'fgmachine_gpu_allocated_ratio', { gpu: '0' }), 0.5)
  t.equal(sumOf(s, 'fgmachine_gpu_allocated_ratio', { gpu: '1' }), 0.25)
  t.equal(sumOf(s, 'fgmachine_outbox_entries'), 3)
  t.equal(sumOf(s, 'fgmachine_outbox_bytes'), 4096)
  scheduler.release('a')
  s = await scrape(m)
  t.equal(sumOf(s, 'fgmachine_capacity_used_ratio'), 0.1)
  t.equal(sumOf(s, 'fgmachine_gpu_allocated_ratio', { gpu: '0' }), 0)
})

t.test('the exposition parser refuses what is not the format', async (t) => {
  t.throws(() => parseExposition('# HELP a x\n# TYPE a gauge\na 1'), /newline/)
  t.throws(() => parseExposition('a 1\n'), /no declared family/)
  t.throws(() => parseExposition('# HELP a x\n# TYPE a gauge\na{b=1} 1\n'), /not a sample/)
  t.throws(() => parseExposition('# HELP a x\n# TYPE a gauge\na one\n'), /bad value/)
  t.throws(() => parseExposition('# TYPE a gauge\na 1\n'), /no HELP/)
  t.same(parseExposition('# HELP a x\n# TYPE a histogram\na_bucket{le="+Inf"} 2\na_count 2\n').samples.map((s) => s.value), [2, 2])
})

import t from 'tap'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'
import { startHarness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { parseExposition, sumOf } from '../helpers/prometheus.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

const sh = (script: string, results: string) => ({ image, command: 'sh', args: ['-c', script, 'exp'], capacity: 0.1, results })

t.test('GET /metrics counts 8 experiments on a real engine: 7 succeed, 1 fails', async (t) => {
  const h = await startHarness({ projects: (r) => ({ ok: sh('echo fine', r), bad: sh('echo oops >&2; exit 1', r) }) })
  t.teardown(() => h.close())
  const scrape = async () => {
    const res = await fetch(`${h.url}/metrics`)
    t.equal(res.status, 200)
    t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
    return parseExposition(await res.text()).samples
  }
  const before = await scrape()
  t.equal(sumOf(before, 'fgmachine_experiments_started_total'), 0)

  const good = Array.from({ length: 7 }, objectId)
  const failing = objectId()
  const answers = await Promise.all([...good.map((id) => h.submit('ok', { _id: id })), h.submit('bad', { _id: failing })])
  t.same(answers.map((a) => a.status), Array(8).fill(200), 'all 8 admitted')
  await h.fglab.waitFinished([...good, failing], 60_000)
  t.ok(good.every((id) => h.fglab.experiment(id).fields._status === 'success'))
  t.equal(h.fglab.experiment(failing).fields._status, 'fail')

  const s = await scrape()
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'success' }), 7)
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'success', reason: 'none' }), 7)
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'fail' }), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_ended_total', { status: 'fail', reason: 'exit_code' }), 1)
  t.equal(sumOf(s, 'fgmachine_experiments_started_total'), 8)
  t.equal(sumOf(s, 'fgmachine_experiments_running'), 0)
  t.equal(sumOf(s, 'fgmachine_experiment_duration_seconds_count'), 8)
  t.equal(sumOf(s, 'fgmachine_container_start_seconds_count'), 8)
  t.equal(sumOf(s, 'fgmachine_submit_to_running_seconds_count'), 8)
  t.ok(sumOf(s, 'fgmachine_container_start_seconds_sum') > 0, 'starting a container takes time')
  t.equal(sumOf(s, 'fgmachine_image_pulls_total'), 0, 'the image is here: nothing pulled')
  t.equal(sumOf(s, 'fgmachine_capacity_used_ratio'), 0, 'all capacity returned')
  t.equal(sumOf(s, 'fgmachine_capacity_free_ratio'), 1)
  t.ok(sumOf(s, 'fgmachine_process_resident_memory_bytes') > 0)
})

import { pino } from 'pino'
import t from 'tap'
import { FglabError, type FglabClient } from '../../src/fglab/client.js'
import { Delivery } from '../../src/fglab/delivery.js'
import { Metrics } from '../../src/metrics.js'
import { parseExposition, sumOf } from '../helpers/prometheus.js'

t.test('metrics: a report given up counted once; failed tries are the client\'s to count, not again here', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const client = { experimentExists: async () => true } as unknown as FglabClient
  const delivery = new Delivery(client, pino({ level: 'silent' }), { backoff: { baseMs: 0, maxMs: 0 }, sleep: async () => undefined, metrics })
  const failures = [new FglabError('down', undefined, true), new FglabError('busy', 503, true)]
  let tries = 0
  const sent = await delivery.deliver('e1', 'status', async () => {
    const err = failures[tries++]
    if (err) throw err
    return { sent: true }
  }, new AbortController().signal)
  t.same(sent, { sent: true }, 'sent after two failures')
  const refused = await delivery.deliver('e1', 'file', async () => {
    throw new FglabError('FGLab answered 404', 404, false)
  }, new AbortController().signal)
  t.match(refused, { sent: false })
  const s = parseExposition(await metrics.registry.metrics()).samples
  t.equal(sumOf(s, 'fgmachine_fglab_request_errors_total'), 0)
  t.equal(sumOf(s, 'fgmachine_reports_given_up_total'), 1, 'only the refused one is given up')
})

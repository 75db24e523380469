import t from 'tap'
import { backoffDelay, retry } from '../../src/util/retry.js'

const BACKOFF = { baseMs: 10, maxMs: 100, random: () => 0.5 }
/** With random() = 0.5 a wait is ¾ of min(maxMs, baseMs·2^attempt), rounded. */
const EXPECTED_WAITS = [8, 15, 30, 60, 75, 75]

t.test('backoffDelay grows and caps', async (t) => {
  const b = { baseMs: 10, maxMs: 100 }
  const low = [0, 1, 2, 3, 4, 5, 40, 1000].map((a) => backoffDelay(a, { ...b, random: () => 0 }))
  t.strictSame(low, [5, 10, 20, 40, 50, 50, 50, 50], 'random 0: half of min(max, base·2^attempt)')
  const mid = [0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, { ...b, random: () => 0.5 }))
  t.strictSame(mid, EXPECTED_WAITS)
  const high = [0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, { ...b, random: () => 0.999999 }))
  t.strictSame(high, [10, 20, 40, 80, 100, 100], 'random near 1: the full delay, never above maxMs')
  for (let a = 0; a < 50; a++) {
    const d = backoffDelay(a, b)
    t.ok(d >= 5 && d <= 100, `attempt ${a}: ${d} within [base/2, max]`)
  }
})

t.test('retry()', async (t) => {
  const waits: number[] = []
  const sleep = async (ms: number) => {
    waits.push(ms)
  }
  const opts = { ...BACKOFF, sleep, retryable: (e: unknown) => (e as Error).message !== 'fatal' }
  let calls = 0
  const v = await retry(async (attempt) => {
    calls++
    if (attempt < 3) throw new Error('flaky')
    return 'ok'
  }, opts)
  t.equal(v, 'ok')
  t.equal(calls, 4)
  t.strictSame(waits, EXPECTED_WAITS.slice(0, 3))

  calls = 0
  await t.rejects(
    retry(async () => {
      calls++
      throw new Error('fatal')
    }, opts),
    { message: 'fatal' },
  )
  t.equal(calls, 1, 'a non-retryable error ends it at once')

  calls = 0
  await t.rejects(
    retry(async () => {
      calls++
      throw new Error('flaky')
    }, { ...opts, maxAttempts: 3 }),
    { message: 'flaky' },
  )
  t.equal(calls, 3, 'maxAttempts is the number of tries')
})

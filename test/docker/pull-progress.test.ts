import { readFileSync } from 'node:fs'
import pino from 'pino'
import t from 'tap'
import { describePull, formatBytes, logPull, PullTracker, type PullEvent } from '../../src/docker/pull-progress.js'
import { LogSink } from '../helpers/harness.js'

/** Events Docker 20.10 streamed, as recorded (see test/fixtures/pull-events/README.md). */
const recorded = JSON.parse(readFileSync(new URL('../fixtures/pull-events/docker-20.10.json', import.meta.url), 'utf8')) as Record<string, PullEvent[]>
const IMAGE = '127.0.0.1:37815/fgmachine-test/rec-b:1'
const BUSYBOX = 1052250
const PAD = 3001151

/** A tracker fed the first `n` events of a recording (all when n is undefined). */
function fed(name: string, n?: number): PullTracker {
  const tr = new PullTracker(IMAGE, 1000)
  for (const e of recorded[name]!.slice(0, n)) tr.add(e)
  return tr
}

t.test('a fresh pull of two layers, step by step', async (t) => {
  t.match(fed('fresh', 0).summary(1000), { phase: 'started', layers: 0, downloadedBytes: 0, percent: 0 }, 'nothing heard yet')
  t.equal(describePull(fed('fresh', 0).summary(1000)), `pulling image ${IMAGE}`)
  t.match(fed('fresh', 1).summary(1000), { phase: 'started', layers: 0 }, '"Pulling from" names the tag, not a layer')
  t.match(fed('fresh', 3).summary(1000), { phase: 'downloading', layers: 2, layersDone: 0, totalBytes: 0, sizesKnown: false })
  const early = fed('fresh', 5).summary(6000)
  t.match(early, { phase: 'downloading', layers: 2, downloadedBytes: 2 * 36628, totalBytes: BUSYBOX + PAD, sizesKnown: true, percent: 1, elapsedMs: 5000 })
  t.equal(describePull(early), `pulling image ${IMAGE}: 0/2 layers, 73.3 kB of 4.05 MB (1%)`)
  // The busybox layer is extracted while the other still downloads: still downloading.
  t.match(fed('fresh', 9).summary(1000), { phase: 'downloading', downloadedBytes: BUSYBOX + 36628, percent: 26 })
  const unpacking = fed('fresh', 12).summary(1000)
  t.match(unpacking, { phase: 'extracting', layersDone: 0, downloadedBytes: BUSYBOX + PAD, percent: 100 }, 'Extracting counts the unpacking, not the download')
  t.match(describePull(unpacking), /: 0\/2 layers, 4\.05 MB of 4\.05 MB \(100%\), extracting$/)
  t.match(fed('fresh', 14).summary(1000), { layersDone: 1 })
  const all = fed('fresh')
  t.match(all.summary(1000), { phase: 'downloading', layersDone: 2, status: `Downloaded newer image for ${IMAGE}` }, 'not done until the pull says it ended')
  const done = all.summary(15_400, true)
  t.match(done, { phase: 'done', layers: 2, layersDone: 2, layersCached: 0, downloadedBytes: BUSYBOX + PAD, percent: 100, elapsedMs: 14_400 })
  t.equal(describePull(done), `pulled image ${IMAGE}: 2 layers, 4.05 MB in 14 s`)
})

t.test('a layer that is here already counts as done, not as bytes', async (t) => {
  const tr = fed('partlyCached', 4)
  t.match(tr.summary(1000), { layers: 2, layersDone: 1, layersCached: 1, downloadedBytes: 36628, totalBytes: PAD, sizesKnown: true, percent: 1 })
  const done = fed('partlyCached').summary(3000, true)
  t.equal(describePull(done), `pulled image ${IMAGE}: 2 layers (1 already here), 3.00 MB in 2 s`)
})

t.test('a pull of an image that is up to date', async (t) => {
  const done = fed('upToDate').summary(1500, true)
  t.match(done, { phase: 'done', layers: 0, percent: 100, status: `Image is up to date for ${IMAGE}` })
  t.equal(describePull(done), `image ${IMAGE} is up to date (1 s)`)
})

t.test('while some layer has not told its size, the total is a lower bound', async (t) => {
  const tr = new PullTracker('x:1', 0)
  tr.add({ status: 'Pulling fs layer', id: 'a' })
  tr.add({ status: 'Pulling fs layer', id: 'b' })
  tr.add({ status: 'Downloading', id: 'a', progressDetail: { current: 500, total: 2000 } })
  const p = tr.summary(0)
  t.match(p, { sizesKnown: false, downloadedBytes: 500, totalBytes: 2000 })
  t.equal(describePull(p), 'pulling image x:1: 0/2 layers, 500 B of at least 2.00 kB')
})

t.test('bytes as Docker writes them', async (t) => {
  t.equal(formatBytes(0), '0 B')
  t.equal(formatBytes(999), '999 B')
  t.equal(formatBytes(1000), '1.00 kB')
  t.equal(formatBytes(18_400_000), '18.4 MB')
  t.equal(formatBytes(2_345_678_901), '2.35 GB')
})

t.test('logPull: "pulling image" at info with the numbers, "pulled image" at the end, each summary once', async (t) => {
  const sink = new LogSink()
  const log = pino({ level: 'info' }, sink)
  const p = fed('fresh', 5).summary(6000)
  logPull(log, p)
  logPull(log, p) // a second start sharing the pull hears the same summary
  logPull(log, fed('fresh').summary(9000, true))
  t.equal(sink.lines.length, 2)
  t.match(sink.lines[0], { level: 30, msg: 'pulling image', image: IMAGE, phase: 'downloading', layersDone: 0, layers: 2, downloadedBytes: 73256, totalBytes: BUSYBOX + PAD, percent: 1, elapsedS: 5 })
  t.match(sink.lines[1], { level: 30, msg: 'pulled image', phase: 'done', percent: 100 })
})

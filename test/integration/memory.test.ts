import { existsSync } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import WebSocket from 'ws'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable } from '../helpers/images.js'
import { MAX_RSS_MB, memoryMachine as machine, sampleRss } from '../helpers/memory-rig.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')

t.test('200 MB of stdout: memory stays bounded, and a viewer still gets the live stream', async (t) => {
  const mb = 200
  const s = await machine(t, `sleep 1; yes 'step 123456: loss 0.123456 acc 0.987654 lr 0.001 (a line of a training log)' | head -c ${mb * 2 ** 20}`)
  const rss = sampleRss(s.m)
  const id = objectId()
  await s.submit(id)
  let received = 0
  const ws = new WebSocket(s.m.url.replace('http', 'ws') + '/')
  t.teardown(() => ws.close())
  await new Promise((r) => ws.once('open', r))
  ws.send(`experiments:${id}`)
  ws.on('message', (data: Buffer) => (received += data.length))
  await s.fglab.waitFinished([id], 300_000)
  const { max, peak } = rss.stop()
  t.equal(s.fglab.experiment(id).fields._status, 'success')
  t.comment(`${mb} MB flood: sampled max ${max.toFixed(0)} MB, peak (VmHWM) ${peak.toFixed(0)} MB; the viewer got ${(received / 2 ** 20).toFixed(0)} MB`)
  t.ok(peak < MAX_RSS_MB, `peak RSS ${peak.toFixed(0)} MB < ${MAX_RSS_MB} MB`)
  t.ok(received > 2 ** 20, 'the viewer got the output live')
})

t.test('20,000 small results files: all delivered, and capacity answers quickly all the while', async (t) => {
  const n = 20_000
  const script = `d="$FGLAB_RESULTS_DIR"; i=0; while [ $i -lt ${n} ]; do echo "sample $i" > "$d/s$i.txt"; i=$((i+1)); done; echo '{"_scores": {"n": ${n}}}' > "$d/scores.json"`
  const s = await machine(t, script, { capacity: 0.5 })
  const id = objectId()
  const latencies: number[] = []
  let polling = true
  const poll = (async () => {
    while (polling) {
      const t0 = performance.now()
      const res = await fetch(`${s.m.url}/projects/p/capacity`)
      await res.arrayBuffer()
      latencies.push(performance.now() - t0)
      await new Promise((r) => setTimeout(r, 20))
    }
  })()
  const t0 = performance.now()
  await s.submit(id)
  const e = s.fglab.experiment(id)
  await s.fglab.waitFinished([id], 600_000)
  polling = false
  await poll
  const seconds = (performance.now() - t0) / 1000
  t.equal([...e.files.keys()].filter((f) => /^s\d+\.txt$/.test(f)).length, n, 'every file arrived')
  t.ok(e.files.has('fgmachine-system.svg'), 'and its system chart, after all of them')
  t.equal(e.files.get('s19999.txt')?.data?.toString(), 'sample 19999\n')
  t.same(e.fields._scores, { n })
  await s.fglab.waitFor(() => s.m.lines.some((l) => l.msg === 'experiment reported'), 120_000, 'the experiment reported')
  t.notOk(existsSync(path.join(s.results, id)), 'the folder is removed once all is sent')
  for (const l of s.m.lines.filter((x) => (x.level as number) >= 40).slice(0, 5)) t.comment(JSON.stringify(l))
  const sorted = [...latencies].sort((a, b) => a - b)
  const p = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
  t.comment(`${n} files in ${seconds.toFixed(1)} s (${(n / seconds).toFixed(0)} files/s, writing included); capacity: ${latencies.length} answers, median ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`)
  t.ok(p(0.99) < 100, `capacity answers in under 100 ms (p99 ${p(0.99).toFixed(1)} ms)`)
})

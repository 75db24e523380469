import { createHash } from 'node:crypto'
import { createReadStream, statSync } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable } from '../helpers/images.js'
import { MAX_RSS_MB, memoryMachine as machine, sampleRss } from '../helpers/memory-rig.js'

// Alone in its file: at about a minute for 4.5 GiB, it would leave the others little of a file's time limit.
if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')

t.test('a sparse file of 4.5 GiB arrives whole (checksum), streamed in flat memory', async (t) => {
  const size = 4.5 * 2 ** 30
  // Sparse: a head, 4.5 GiB of hole, 1 MiB of random at the end (busybox dd).
  const script = `d="$FGLAB_RESULTS_DIR"; printf 'checkpoint v1\\n' > "$d/model.ckpt"; dd if=/dev/urandom of="$d/model.ckpt" bs=1048576 count=1 seek=${size / 2 ** 20 - 1} conv=notrunc 2>/dev/null`
  const s = await machine(t, script, { keep_results: true })
  s.fglab.keepBytes = 0 // the fake FGLab hashes what it gets, holding none of it
  const before = s.m.rssMb()
  const rss = sampleRss(s.m)
  const id = objectId()
  const t0 = performance.now()
  await s.submit(id)
  await s.fglab.waitFinished([id], 600_000)
  const seconds = (performance.now() - t0) / 1000
  const { max, peak } = rss.stop()
  const file = path.join(s.results, id, 'model.ckpt')
  t.equal(statSync(file).size, size, 'the file is 4.5 GiB')
  const stored = s.fglab.experiment(id).files.get('model.ckpt')
  t.equal(stored?.size, size, 'FGLab got every byte (not modulo 2^32)')
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  t.equal(stored?.sha256, hash.digest('hex'), 'byte for byte')
  t.equal(s.fglab.experiment(id).fields._status, 'success')
  t.comment(`4.5 GiB upload: ${seconds.toFixed(1)} s; RSS ${before.now.toFixed(0)} MB before, sampled max ${max.toFixed(0)} MB, peak (VmHWM) ${peak.toFixed(0)} MB`)
  t.ok(peak < MAX_RSS_MB, `peak RSS ${peak.toFixed(0)} MB < ${MAX_RSS_MB} MB`)
  // Flat: V8 lets up to 64 MiB of dead read buffers (external memory) wait for a collection,
  // whatever the file's size; the file is 4.5 GiB (before the streaming upload: its size).
  t.ok(max - before.now < 80, `RSS flat through the upload (+${(max - before.now).toFixed(0)} MB for 4.5 GiB)`)
})


import t from 'tap'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'
import { startHarness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

// A 1×1 PNG.
const PNG_B64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=='

/** A training run in miniature: scores, a chart, notes rewritten at the end, a PNG, output on both streams. */
const TRAIN = `
set -e
out="$FGLAB_RESULTS_DIR"
echo "training with $*"
echo "warming up" >&2
printf '{"_notes": "first draft"}' > "$out/notes.json"
printf '{"_scores": {"accuracy": 0.93, "loss": 0.2}}' > "$out/scores.json"
printf '{"_charts": [{"columnNames": ["loss"], "data": {"columns": [[1.0, 0.5, 0.2]]}}]}' > "$out/charts.json"
echo ${PNG_B64} | base64 -d > "$out/plot.png"
sleep 0.3
printf '{"_notes": "final notes"}' > "$out/notes.json"
echo done
`

t.test('a container experiment runs end to end and every result reaches FGLab', async (t) => {
  const h = await startHarness({
    projects: (results) => ({
      // No system chart (system-charts.test.ts has it): one would be a fifth file once the run lasts past 1 s.
      proj1: { image, command: 'sh', args: ['-c', TRAIN, 'train'], options: 'double-dash', capacity: 0.5, results, system_charts: false },
    }),
  })
  t.teardown(() => h.close())

  const cap = await h.capacity('proj1')
  t.equal(cap.status, 200)
  t.equal(cap.body.capacity, 2)
  t.equal(cap.body._id, h.machine.registration.machineId)

  const id = objectId()
  const res = await h.submit('proj1', { lr: 0.1, model: 'cnn v2', _id: id })
  t.equal(res.status, 200)
  t.same(res.body, { lr: 0.1, model: 'cnn v2', _id: id }, 'the body is echoed')

  await h.fglab.waitFinished([id])
  const e = h.fglab.experiment(id)
  t.equal(e.started, 1)
  t.equal(e.finished, 1)
  t.equal(e.fields._status, 'success')
  t.same(e.fields._scores, { accuracy: 0.93, loss: 0.2 })
  t.same(e.fields._charts, [{ columnNames: ['loss'], data: { columns: [[1.0, 0.5, 0.2]] } }])
  t.equal(e.fields._notes, 'final notes', 'notes rewritten at the end arrive in their final form')
  t.match(e.fields, { exit_code: 0, FGMachine: /^success: exit code 0, ran [\d.]+ m?s$/ })
  t.type(e.fields.duration_s, 'number')
  for (const [k, v] of Object.entries(e.fields)) if (!k.startsWith('_')) t.not(typeof v, 'object', `${k} is shown as text on the page, not [object Object]`)
  const png = e.files.get('plot.png')
  t.ok(png, 'the PNG is uploaded')
  t.equal(png?.type, 'image/png')
  t.same(png?.data, Buffer.from(PNG_B64, 'base64'))
  t.equal(e.calls[0], 'started')
  t.same(e.calls.slice(-2), ['update', 'finished'], 'status and finished come after the results')

  const out = h.machine.logHub.backlog(id)
  const stdout = out.filter((c) => c.stream === 'stdout').map((c) => c.text).join('')
  const stderr = out.filter((c) => c.stream === 'stderr').map((c) => c.text).join('')
  t.match(stdout, `training with --lr=0.1 --model=cnn v2 --_id=${id}\ndone\n`)
  t.match(stderr, 'warming up')
  t.notMatch(stdout, 'warming up', 'stdout and stderr are kept apart')

  await h.machine.experiments.idle()
  const line = (msg: string) => h.logs.lines.find((l) => l.msg === msg && l.experimentId === id)
  t.match(line('experiment ended'), { how: /^success: exit code 0, ran [\d.]+ m?s$/, duration_s: Number, status: 'success' }, 'the log says how it ended and how long it ran')
  t.match(line('experiment reported'), { files: 4 }, 'and how many results files reached FGLab')
  t.equal(h.machine.scheduler.leases().length, 0, 'capacity released')
  const { existsSync } = await import('node:fs')
  t.notOk(existsSync(`${h.resultsDir}/${id}`), 'the results folder is removed once acknowledged')
})

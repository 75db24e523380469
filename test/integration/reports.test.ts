import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startHarness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

/** A JSON file of a chart with `n` points: as BSON, about 13 bytes a point. */
const chart = (file: string, n: number) => `{ printf '{"_charts": {"columnNames": ["loss"], "data": {"columns": [["loss", '; seq -s , 1 ${n}; printf ']]}}}'; } > "$d/${file}"`

/** Experiments whose results FGLab (its MongoDB) refuses, each for another reason. */
const CASES: Record<string, { script: string; expect: RegExp }> = {
  empty: { script: `echo '{}' > "$d/empty.json"`, expect: /^$/ },
  dotted: { script: `echo '{"_scores": {"mAP@0.5": 0.31, "loss": 0.2}}' > "$d/scores.json"`, expect: /scores\.json: uploaded as a file, not as fields: field name "mAP@0\.5" has a "\."/ },
  oversized: { script: chart('chart.json', 1_500_000), expect: /chart\.json: uploaded as a file, not as fields: it is \d+\.\d MiB as BSON/ },
  // Each fits; together they make the document too big: only MongoDB can tell (500, again and again).
  'too big together': { script: `${chart('a.json', 800_000)}; ${chart('b.json', 800_000).replace('_charts', '_charts_b')}`, expect: /b\.json: not sent: FGLab answered 500 MongoError: Resulting document after update is larger than 16777216 \d+ times/ },
}

t.test('results FGLab refuses for good: each experiment still ends, with its status, within a minute of its end', async (t) => {
  const h = await startHarness({
    machine: { backoff: { baseMs: 500, maxMs: 30_000 } }, // as shipped: the refusal is told from an outage over time
    projects: (r) => Object.fromEntries(Object.entries(CASES).map(([name, c]) => [name.replace(/ /g, '-'), { image, command: 'sh', args: ['-c', `d="$FGLAB_RESULTS_DIR"; ${c.script}`], capacity: 0.25, results: r }])),
  })
  t.teardown(() => h.close())
  const ids = Object.keys(CASES).map(() => objectId())
  for (const [i, name] of Object.keys(CASES).entries()) t.equal((await h.submit(name.replace(/ /g, '-'), { _id: ids[i] })).status, 200)
  await h.fglab.waitFinished(ids, 120_000)
  for (const [i, [name, c]] of Object.entries(CASES).entries()) {
    const id = ids[i]!
    const e = h.fglab.experiment(id)
    t.equal(e.fields._status, 'success', `${name}: the status arrives`)
    t.equal(e.finished, 1, `${name}: finished arrives`)
    const ended = h.logs.lines.find((l) => l.msg === 'experiment ended' && l.experimentId === id)?.time as number
    const finished = h.fglab.calls.find((x) => x.path === `/api/v1/experiments/${id}/finished`)!.at
    t.ok(finished - ended < 60_000, `${name}: within 60 s of the program's end (${((finished - ended) / 1000).toFixed(1)} s)`)
    t.match(String(e.fields.FGMachine_results ?? ''), c.expect, `${name}: the experiment says what became of its results`)
  }
  const dotted = h.fglab.experiment(ids[1]!)
  t.equal(dotted.files.get('scores.json')?.data?.toString(), '{"_scores": {"mAP@0.5": 0.31, "loss": 0.2}}\n', 'the scores arrive as a file')
  t.ok(h.fglab.experiment(ids[2]!).files.has('chart.json'), 'the big chart arrives as a file')
  await h.machine.experiments.idle()
  t.notOk(existsSync(path.join(h.resultsDir, ids[2]!)), 'FGLab has everything of those: their folders go')
  t.ok(existsSync(path.join(h.resultsDir, ids[3]!, 'b.json')), 'the refused file\'s folder stays')
})

t.test('an experiment deleted in FGLab while it runs: no more sending, its folder kept, said once', async (t) => {
  const h = await startHarness({
    projects: (r) => ({
      p: { image, command: 'sh', args: ['-c', 'd="$FGLAB_RESULTS_DIR"; i=0; while [ ! -e "$d/stop" ]; do echo "$i" > "$d/step$i.txt"; i=$((i+1)); sleep 0.2; done'], capacity: 1, results: r },
    }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await h.fglab.waitFor(() => h.fglab.experiment(id).files.size >= 2, 20_000, 'the first files')
  h.fglab.deleteExperiment(id)
  await h.fglab.waitFor(() => h.logs.find(/FGLab no longer has this experiment/) !== undefined, 30_000, 'the deletion to be seen')
  const calls = () => h.fglab.calls.filter((c) => c.path.includes(id)).length
  const seen = calls()
  await new Promise((r) => setTimeout(r, 1500)) // it goes on writing files
  writeFileSync(path.join(h.resultsDir, id, 'stop'), '')
  await h.fglab.waitFor(() => h.logs.lines.some((l) => l.msg === 'experiment reported' && l.experimentId === id), 30_000, 'its end')
  t.equal(calls(), seen, 'nothing more was sent for it: not its files, status or finished')
  t.equal(h.logs.lines.filter((l) => /FGLab no longer has this experiment/.test(String(l.msg))).length, 1, 'said once')
  t.ok(readdirSync(path.join(h.resultsDir, id)).length > 5, 'its results folder is kept, with every file')
  t.match(h.logs.find('results folder kept: not everything in it reached FGLab'), { reason: 'the experiment was deleted in FGLab' })
})

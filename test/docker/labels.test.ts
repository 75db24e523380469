import t from 'tap'
import { LABELS, ownership, runFromLabels, runLabels, type LabelledRun } from '../../src/docker/labels.js'

const id = '5f1e2d3c4b5a69788796a5b1'

t.test('labels written for a run read back as that run', async (t) => {
  const runs: LabelledRun[] = [
    { id, projectId: 'p', resultsDir: `/data/results/${id}`, keepResults: false, timeoutS: undefined, lease: { experimentId: id, projectId: 'p', cpuUnits: 250_000, gpus: [] } },
    { id, projectId: 'gpu-proj_1', resultsDir: `/r/${id}`, keepResults: true, timeoutS: 3600, lease: { experimentId: id, projectId: 'gpu-proj_1', cpuUnits: 0, gpus: [{ index: 1, units: 500_000 }, { index: 3, units: 1_000_000 }] } },
    // system_charts: false holds for a run taken up from its labels alone.
    { id, projectId: 'quiet', resultsDir: `/r/${id}`, keepResults: false, timeoutS: undefined, charts: false, lease: { experimentId: id, projectId: 'quiet', cpuUnits: 1000, gpus: [] } },
  ]
  for (const run of runs) {
    const labels = runLabels(run, 'aaaaaaaaaaaaaaaaaaaaaaaa')
    t.equal(labels[LABELS.machine], 'aaaaaaaaaaaaaaaaaaaaaaaa')
    t.equal(labels[LABELS.managed], 'true')
    t.strictSame(runFromLabels(labels), run, `round trip: ${run.projectId}`)
  }
})

t.test('labels that do not make an experiment read back as nothing', async (t) => {
  const good = runLabels({ id, projectId: 'p', resultsDir: `/data/${id}`, keepResults: false, lease: { experimentId: id, projectId: 'p', cpuUnits: 1, gpus: [] } }, 'm')
  const bad: Array<[string, Record<string, string>]> = [
    ['no experiment id', { ...good, [LABELS.experiment]: 'nope' }],
    ['a results folder not its own', { ...good, [LABELS.results]: '/data/other' }],
    ['a relative results folder', { ...good, [LABELS.results]: `data/${id}` }],
    ['units that are not a number', { ...good, [LABELS.cpuUnits]: 'lots' }],
    ['a lease that holds nothing', { ...good, [LABELS.cpuUnits]: '0' }],
    ['a gpus label of another form', { ...good, [LABELS.gpus]: '0:x' }],
  ]
  for (const [what, labels] of bad) t.equal(runFromLabels(labels), undefined, what)
})

t.test("whose a container is: its data folder decides, and its FGLab id when it carries none", async (t) => {
  const run: LabelledRun = { id, projectId: 'p', resultsDir: `/data/${id}`, keepResults: false, lease: { experimentId: id, projectId: 'p', cpuUnits: 1, gpus: [] } }
  const me = 'aaaaaaaaaaaaaaaaaaaaaaaa'
  const old = 'bbbbbbbbbbbbbbbbbbbbbbbb'
  const labels = runLabels(run, me, '/srv/fgmachine')
  t.equal(labels[LABELS.data], '/srv/fgmachine')
  t.equal(ownership(labels, me, '/srv/fgmachine'), 'ours')
  t.equal(ownership(runLabels(run, old, '/srv/fgmachine'), me, '/srv/fgmachine'), 'ours', 'started by this data folder under an id it had before')
  t.equal(ownership(runLabels(run, me, '/srv/copy-of-fgmachine'), me, '/srv/fgmachine'), 'foreign', 'the same FGLab id from another data folder: a copy of specs.json')
  const legacy = runLabels(run, me)
  t.notOk(LABELS.data in legacy, 'no data folder known: no label')
  t.equal(ownership(legacy, me, '/srv/fgmachine'), 'ours', 'made before containers carried their data folder: by the FGLab id')
  t.equal(ownership(legacy, old, '/srv/fgmachine'), 'foreign')
})

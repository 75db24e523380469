import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { startHarness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureNodeImage } from '../helpers/images.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })

t.test('docker-compose.yml (and the GPU override) is valid and wires FGLab, MongoDB and FGMachine together', async (t) => {
  // `docker-compose config` validates without pulling: mongo:3.6 and kaixhin/fglab come
  // from Docker Hub, which this machine cannot reach, so the stack itself is not started here.
  const config = run('docker-compose', ['-f', 'docker-compose.yml', 'config'])
  t.match(config, /mongo:\n(?:.*\n)*?\s+image: mongo:3\.6/)
  t.match(config, /fglab:\n(?:.*\n)*?\s+image: kaixhin\/fglab/)
  t.match(config, /MONGODB_URI: mongodb:\/\/127\.0\.0\.1:27017\/FGLab/)
  t.match(config, /- 127\.0\.0\.1:27017:27017/, 'MongoDB is reachable from this host only')
  t.notMatch(config, /network_mode: service:/, 'no service shares another\'s network namespace: restarting one would cut the other off')
  t.match(config, /fglab:\n(?:.*\n)*?\s+network_mode: host/, 'FGLab on the host\'s network')
  t.match(config, /fgmachine:\n(?:.*\n)*?\s+network_mode: host/, 'FGMachine too: one address for FGLab\'s server and the browser')
  t.match(config, /fgmachine:\n(?:.*\n)*?\s+restart: unless-stopped/, 'back after a reboot')
  t.match(config, /- \/var\/run\/docker\.sock:\/var\/run\/docker\.sock:rw/)
  t.match(config, /- fgmachine-data:\/data:rw/, 'results on a named volume, shareable with siblings')
  t.match(config, /examples\/template\.json:\/etc\/fgmachine\/template\.json:ro/)
  t.match(config, /FGMACHINE_TEMPLATE: \/etc\/fgmachine\/template\.json/)
  const gpu = run('docker-compose', ['-f', 'docker-compose.yml', '-f', 'docker-compose.gpu.yml', 'config'])
  t.match(gpu, /driver: nvidia/)
  t.match(gpu, /capabilities:\n\s+- gpu/)
})

t.test('the example: "Add to Machine" writes a ready project, and an experiment delivers notes, scores, a chart and a plot', async (t) => {
  const image = 'fgmachine-example:test'
  run('docker', ['build', '-q', '--build-arg', `NODE_IMAGE=${ensureNodeImage()}`, '-t', image, 'examples/train'])
  const template = JSON.parse(readFileSync(path.join(ROOT, 'examples/template.json'), 'utf8')) as Record<string, unknown>
  t.equal(template.image, 'fgmachine-example:latest', 'the template names the image docker-compose builds')
  // The shipped template, with this test's image tag and results folder.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-example-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const templateFile = path.join(dir, 'template.json')
  writeFileSync(templateFile, JSON.stringify({ ...template, image, results: path.join(dir, 'results') }))
  const h2 = await startHarness({ config: { templatePath: templateFile } })
  t.teardown(() => h2.close())
  t.notOk(h2.logs.find(/^FGMACHINE_TEMPLATE/), 'the shipped template is a valid entry')

  const projectId = objectId()
  const res = await fetch(`${h2.url}/projects`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ project_id: projectId }) })
  t.equal(res.status, 200)
  await h2.fglab.waitFor(() => h2.machine.projects.get(projectId) !== undefined, 10_000, 'the new project to load')
  t.equal((await h2.capacity(projectId)).body.capacity, 4, 'ready to run, no editing needed')

  // The options FGLab sends for examples/toy-regression.json's defaults (epochs shortened).
  const schema = JSON.parse(readFileSync(path.join(ROOT, 'examples/toy-regression.json'), 'utf8')) as Record<string, { default: unknown }>
  const options = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, v.default]))
  const id = objectId()
  t.equal((await h2.submit(projectId, { ...options, epochs: 8, epoch_ms: 10, _id: id })).status, 200)
  await h2.fglab.waitFinished([id], 60_000)
  const e = h2.fglab.experiment(id)
  t.equal(e.fields._status, 'success')
  t.match(e.fields._notes, /^sgd, lr 0\.05: best val loss at epoch 8; fit y = /)
  const scores = e.fields._scores as Record<string, number>
  t.ok(scores.val_loss! > 0 && scores.val_loss! < 20, 'a validation loss')
  t.match(e.fields._charts, { columnNames: ['train', 'val', 'epoch'], data: { x: 'epoch' } })
  const png = e.files.get('loss.png')
  t.equal(png?.type, 'image/png')
  t.same(png?.data?.subarray(0, 8), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), 'a PNG')
  const stdout = h2.machine.logHub.backlog(id).map((c) => c.text).join('')
  t.match(stdout, /epoch 8\/8 {2}train loss/)
})

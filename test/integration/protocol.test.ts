import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import WebSocket from 'ws'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'
import { startHarness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

t.test('bad input gets a clear 4xx and changes nothing', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: { image, command: 'true', capacity: 1, results: r } }) })
  t.teardown(() => h.close())
  const post = (path: string, body: string, type = 'application/json') =>
    fetch(h.url + path, { method: 'POST', headers: { 'content-type': type }, body })

  let res = await post('/projects/p', '{"_id": "../../etc/passwd"}')
  t.equal(res.status, 400)
  t.match(await res.json(), { error: /24 hex digits/ })
  res = await post('/projects/p', '{"seed": 1}')
  t.equal(res.status, 400, 'no _id')
  res = await post('/projects/p', '{"seed": ')
  t.equal(res.status, 400, 'malformed JSON')
  res = await post('/projects/p', `{"__proto__": {"polluted": true}, "_id": "${objectId()}"}`)
  t.equal(res.status, 400, '__proto__ is refused')
  t.equal(({} as Record<string, unknown>).polluted, undefined)
  res = await post('/projects/p', '[1,2]')
  t.equal(res.status, 400, 'an array is not an options object')
  res = await post('/projects/p', JSON.stringify({ _id: objectId(), big: 'x'.repeat(300 * 1024) }))
  t.equal(res.status, 413, 'body size is limited')
  res = await post('/projects/unknown-project', JSON.stringify({ _id: objectId() }))
  t.equal(res.status, 501, 'unknown project: no capacity')
  t.match(await res.json(), { error: 'No capacity available', cause: 'unknown_project', reason: /^project unknown-project is not in .*projects\.json: press "Add to Machine"/ }, 'FGLab\'s answer, and why')
  t.equal((await h.capacity('unknown-project')).status, 501)
  t.equal((await h.capacity('..%2F..%2Fetc')).status, 400, 'an encoded path is not a project id')
  res = await fetch(`${h.url}/experiments/..%2F..%2Fetc%2Fpasswd/kill`, { method: 'POST' })
  t.equal(res.status, 400)
  res = await fetch(`${h.url}/experiments/${objectId()}/kill`, { method: 'POST' })
  t.equal(res.status, 200, 'kill of an unknown experiment: the original\'s answer')
  t.same(await res.json(), { status: 'killed' })
  t.ok(h.logs.find(/not running here/), 'and a log line says there was nothing to kill')
  t.equal(h.machine.scheduler.leases().length, 0, 'nothing reserved')
  t.equal(h.fglab.experiments.size, 0, 'nothing reported')
})

t.test('a full outbox (FGLab away for long) takes no new experiments; they come back when FGLab has caught up', async (t) => {
  const h = await startHarness({
    config: { outboxMaxBytes: 200 },
    projects: (r) => ({ p: { image, command: 'sh', args: ['-c', 'echo \'{"_scores": {"a": 1}}\' > "$FGLAB_RESULTS_DIR/s.json"'], capacity: 0.25, results: r } }),
  })
  t.teardown(() => h.close())
  h.fglab.failWith(503)
  const first = objectId()
  t.equal((await h.submit('p', { _id: first })).status, 200)
  await h.fglab.waitFor(() => h.machine.outbox.full(), 30_000, 'the outbox filling while FGLab refuses')
  t.match(await h.capacity('p'), { status: 501, body: { cause: 'outbox_full', reason: /^the outbox is full: [\d.]+ MB of reports wait for FGLab/ } }, 'no capacity while the outbox is full')
  t.match(await h.submit('p', { _id: objectId() }), { status: 501, body: { cause: 'outbox_full' } }, 'and a start is refused')
  t.ok(h.logs.find(/the outbox is full/))
  h.fglab.recover()
  await h.fglab.waitFinished([first], 30_000)
  await h.fglab.waitFor(() => !h.machine.outbox.full(), 30_000, 'the outbox draining')
  t.equal((await h.capacity('p')).body.capacity, 4, 'full capacity again')
  t.same(h.fglab.experiment(first).fields._scores, { a: 1 }, 'nothing of the first was lost')
})

t.test('capacity answer and reset', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: { image, command: 'sleep', args: ['30'], capacity: '0.3', results: r } }) })
  t.teardown(() => h.close())
  const cap = await h.capacity('p')
  t.same(cap.body, { capacity: 3, address: 'http://127.0.0.1:0', _id: h.machine.registration.machineId })
  const id = objectId()
  await h.submit('p', { _id: id })
  t.equal((await h.capacity('p')).body.capacity, 2)
  const res = await fetch(`${h.url}/capacity/reset`, { method: 'POST', headers: { origin: 'http://fglab:5080' } })
  t.equal(res.status, 200)
  t.equal(res.headers.get('access-control-allow-origin'), '*')
  t.equal((await h.capacity('p')).body.capacity, 2, 'a running experiment keeps its capacity after a reset')
  await fetch(`${h.url}/experiments/${id}/kill`, { method: 'POST' })
  await h.fglab.waitFinished([id], 30_000)
})

t.test('"Add to Machine": PUT /projects adds a template, with CORS for the FGLab page', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: { image, command: 'true', capacity: 1, results: r } }) })
  t.teardown(() => h.close())
  const pre = await fetch(`${h.url}/projects`, {
    method: 'OPTIONS',
    headers: { origin: 'http://fglab:5080', 'access-control-request-method': 'PUT', 'access-control-request-headers': 'content-type' },
  })
  t.ok(pre.status === 204 || pre.status === 200, 'preflight answered')
  t.equal(pre.headers.get('access-control-allow-origin'), '*')
  t.match(pre.headers.get('access-control-allow-methods') ?? '', /PUT/)
  const id = objectId()
  const put = (body: unknown) =>
    fetch(`${h.url}/projects`, { method: 'PUT', headers: { 'content-type': 'application/json', origin: 'http://fglab:5080' }, body: JSON.stringify(body) })
  let res = await put({ project_id: id })
  t.equal(res.status, 200)
  t.match(await res.json(), { msg: new RegExp(`^Project ID ${id} template added - please adjust on `) })
  const file = JSON.parse(readFileSync(`${h.dir}/projects.json`, 'utf8'))
  t.ok(file.p, 'other entries kept')
  t.ok(file[id], 'template added')
  t.match(readFileSync(`${h.dir}/projects.json`, 'utf8'), /\n {2}"p": \{/, 'the file stays readable (indented)')
  res = await put({ project_id: id })
  t.same(await res.json(), { msg: `Project ID ${id} already exists` })
  res = await put({ project_id: '../x' })
  t.equal(res.status, 400)
  t.match(await h.capacity(id), { status: 501, body: { cause: 'invalid_entry', reason: /entry in .*projects\.json is left out: .*capacity: capacity is empty: it must be a number/ } }, 'an unfilled template offers no capacity, and says what to fill in')
  await h.fglab.waitFor(() => Object.hasOwn((h.fglab.projects.get(h.machine.registration.machineId!) ?? {}) as object, id), 10_000, 'projects sent to FGLab')
})

t.test('a projects.json that does not parse keeps the last good one running', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: { image, command: 'true', capacity: 0.5, results: r } }) })
  t.teardown(() => h.close())
  writeFileSync(`${h.dir}/projects.json`, '{ "p": { "image": ')
  await h.fglab.waitFor(() => h.logs.find(/not valid JSON/) !== undefined, 10_000, 'the reload to fail')
  t.equal((await h.capacity('p')).body.capacity, 2, 'the last good configuration still runs')
  h.writeProjects({ p: { image, command: 'true', capacity: 0.25, results: h.resultsDir }, bad: { capacity: 7 } })
  await h.fglab.waitFor(() => h.machine.projects.get('p')?.capacity === 0.25, 10_000, 'reload')
  t.equal((await h.capacity('p')).body.capacity, 4)
  t.ok(h.logs.lines.some((l) => l.projectId === 'bad' && l.field === 'capacity'), 'the bad entry is reported with its field')
  const sent = h.fglab.projects.get(h.machine.registration.machineId!) as Record<string, unknown>
  await h.fglab.waitFor(() => Object.hasOwn(h.fglab.projects.get(h.machine.registration.machineId!) as object, 'bad'), 10_000, 'projects update')
  t.ok(sent, 'FGLab was told the projects')
})

t.test('live logs over the WebSocket: a late subscriber gets the backlog, then live output, streams apart', async (t) => {
  const script = 'for i in 1 2 3; do echo "early $i"; done; echo "warn" >&2; sleep 1.5; for i in 4 5; do echo "late $i"; done'
  const h = await startHarness({ projects: (r) => ({ p: { image, command: 'sh', args: ['-c', script], capacity: 1, results: r } }) })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await h.fglab.waitFor(() => h.machine.logHub.backlog(id).some((c) => c.text.includes('warn')), 20_000, 'early output')
  const ws = new WebSocket(h.url.replace('http', 'ws') + '/')
  const messages: Array<Record<string, string>> = []
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())))
  await new Promise((resolve) => ws.once('open', resolve))
  ws.send('not a subscription')
  ws.send('experiments:../../etc')
  ws.send(`experiments:${id}`)
  await h.fglab.waitFinished([id], 20_000)
  await h.fglab.waitFor(() => messages.some((m) => m.stdout?.includes('late 5')), 5000, 'live output')
  ws.close()
  const stdout = messages.filter((m) => 'stdout' in m).map((m) => m.stdout).join('')
  const stderr = messages.filter((m) => 'stderr' in m).map((m) => m.stderr).join('')
  t.equal(stdout, 'early 1\nearly 2\nearly 3\nlate 4\nlate 5\n', 'backlog then live, in order')
  t.equal(stderr, 'warn\n')
  t.ok(messages.every((m) => Object.keys(m).length === 1), 'each message is {"stdout": …} or {"stderr": …}')
})

t.test('GET / over plain HTTP says what this is', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const res = await fetch(h.url + '/')
  t.equal(res.status, 200)
  t.match(await res.json(), { name: 'fgmachine' })
})

t.test('a log viewer that stops reading is dropped; the experiment is not slowed and memory stays bounded', async (t) => {
  const script = 'yes 0123456789abcdef0123456789abcdef0123456789abcdef | head -c 40000000; echo end'
  const h = await startHarness({ projects: (r) => ({ p: { image, command: 'sh', args: ['-c', script], capacity: 1, results: r } }) })
  t.teardown(() => h.close())
  const ws = new WebSocket(h.url.replace('http', 'ws') + '/')
  await new Promise((resolve) => ws.once('open', resolve))
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  const id = objectId()
  ws.send(`experiments:${id}`)
  // Stop reading: the server's send buffer for this viewer can only grow.
  const raw = (ws as unknown as { _socket: import('node:net').Socket })._socket
  await new Promise((r) => setTimeout(r, 100))
  raw.pause()
  await h.submit('p', { _id: id })
  await h.fglab.waitFinished([id], 60_000)
  t.equal(h.fglab.experiment(id).fields._status, 'success', 'the experiment ran to its end while the viewer was stuck')
  t.equal(h.machine.logHub.stats(id)?.subscribers ?? 0, 0, 'the stuck viewer was dropped')
  t.ok((h.machine.logHub.stats(id)?.bytes ?? 0) <= 4 * 1024 * 1024, 'the backlog stays within its bound')
  t.ok(h.logs.find('closing a log viewer that fell behind'), 'and that is logged')
  raw.resume()
  t.equal(await closed, 1013, 'the viewer is told why (1013, try again later)')
})

t.test('GET /health says whether Docker and FGLab answer', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  let res = await fetch(`${h.url}/health`)
  t.equal(res.status, 200)
  t.same(await res.json(), { status: 'ok', docker: { ok: true }, fglab: { ok: true }, registration: { ok: true }, machine_id: h.machine.registration.machineId })
  h.fglab.failWith('reset')
  res = await fetch(`${h.url}/health`)
  t.equal(res.status, 200, 'FGLab down: still able to run experiments')
  t.match(await res.json(), { status: 'degraded', fglab: { ok: false, error: /FGLab unreachable/ } })

  const noDocker = await startHarness({ config: { dockerHost: 'unix:///nonexistent/docker.sock' } })
  t.teardown(() => noDocker.close())
  res = await fetch(`${noDocker.url}/health`)
  t.equal(res.status, 503)
  t.match(await res.json(), { status: 'unhealthy', docker: { ok: false, error: /Docker is not reachable/ } })
})

t.test('a misspelled key refuses its entry: FGLab gets no capacity, with the reason and the likely key; the log says it once', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: { image, command: 'true', capacity: 0.5, results: r, shm_szie: '8g' } }) })
  t.teardown(() => h.close())
  t.ok(h.logs.find('project p left out: shm_szie: unknown key "shm_szie": did you mean "shm_size"?'), 'said at load')
  for (let i = 0; i < 3; i++) {
    t.match(await h.capacity('p'), { status: 501, body: { cause: 'invalid_entry', reason: /shm_szie: unknown key "shm_szie": did you mean "shm_size"\?/ } })
  }
  t.match(await h.submit('p', { _id: objectId() }), { status: 501, body: { cause: 'invalid_entry' } }, 'a start says the same')
  t.equal(h.logs.lines.filter((l) => /^no capacity for FGLab: project p's entry/.test(String(l.msg))).length, 1, 'logged once, not at every question')
  t.equal(h.fglab.experiments.size, 0)
})

t.test('a template that could never load is said at start, naming the key', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-tpl-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(path.join(dir, 'template.json'), JSON.stringify({ image, capacty: 0.5, results: '/data/results' }))
  const h = await startHarness({ config: { templatePath: path.join(dir, 'template.json') } })
  t.teardown(() => h.close())
  t.ok(h.logs.find('FGMACHINE_TEMPLATE: the entry "Add to Machine" writes will be left out until edited: capacty: unknown key "capacty": did you mean "capacity"?'))
})

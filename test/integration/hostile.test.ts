import { execFileSync } from 'node:child_process'
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { buildApp } from '../../src/app.js'
import { dockerAvailable, ensureBusyboxImage, testDockerSocket } from '../helpers/images.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

const SKIPPED = 'results entry is not a regular file (symlink, socket, FIFO or device); not uploaded'
const SECRET = 'top secret: must never reach FGLab\n'

// No system chart: a container that runs past its first reading (1 s; a loaded machine
// gets there) would add fgmachine-system.svg to the files these tests count.
const sh = (script: string, results: string, extra: Record<string, unknown> = {}) => ({
  image,
  command: 'sh',
  args: ['-c', script, 'exp'],
  capacity: 1,
  results,
  system_charts: false,
  ...extra,
})

/** Every entry under `dir`, recursively, as `relative path:type`, never following a symlink. */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return []
  const out: string[] = []
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name)
      const st = lstatSync(p)
      const type = st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isFIFO() ? 'fifo' : st.isSocket() ? 'socket' : 'other'
      out.push(`${path.relative(dir, p)}:${type}`)
      if (type === 'dir') walk(p)
    }
  }
  walk(dir)
  return out
}

function containersOf(h: Harness): string[] {
  const out = execFileSync('docker', ['ps', '-aq', '--filter', `label=fgmachine.machine=${h.machine.registration.machineId}`], { encoding: 'utf8' })
  return out.split('\n').filter(Boolean)
}

/** Every byte the fake FGLab received for one experiment: file contents and JSON fields. */
function received(h: Harness, id: string): string[] {
  const e = h.fglab.experiment(id)
  return [...[...e.files.values()].map((f) => String(f.data)), JSON.stringify(e.fields)]
}

const post = (h: Harness, p: string, body: string | undefined, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  fetch(h.url + p, { method: 'POST', headers: body === undefined ? {} : headers, body })

/** A request with its path sent byte for byte (fetch would resolve `%2e%2e` as `..` first). */
function rawRequest(h: Harness, method: string, p: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const u = new URL(h.url)
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path: p }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString() || '{}') }))
    })
    req.on('error', reject)
    req.end()
  })
}

function noPollution(t: Test, what: string): void {
  const probe = {} as Record<string, unknown>
  t.equal(probe.polluted, undefined, `${what}: Object.prototype is not polluted`)
  t.equal(Object.keys(Object.prototype).length, 0, `${what}: Object.prototype has no enumerable keys`)
  t.equal(Object.getOwnPropertyNames(Object.prototype).includes('polluted'), false, `${what}: no "polluted" on Object.prototype`)
}

t.test('symlinks, a FIFO and a socket in the results folder are skipped, never followed, and their targets survive cleanup', async (t) => {
  // busybox's `ln` and `mkfifo` are not among the image's applet links, but /bin/busybox runs them:
  // the container itself makes every hostile entry. A symlink's target is only text: the host resolves it.
  const script = [
    'set -e',
    'cd "$FGLAB_RESULTS_DIR"',
    'busybox ln -s /etc/passwd passwd',
    'busybox ln -s "$DOCKER_SOCK" docker.sock',
    'busybox ln -s / root',
    'busybox ln -s "$OUTSIDE/secret.txt" secret.txt',
    'busybox ln -s "$OUTSIDE/stolen.json" stolen.json',
    'busybox ln -s "$OUTSIDE" outside-dir',
    'busybox ln -s /proc/self/environ environ',
    'busybox mkfifo fifo',
    // The test process adds a listening Unix socket; then the normal results.
    'while [ ! -S sock ]; do sleep 0.05; done',
    'echo "a normal result" > normal.txt',
    'echo \'{"_scores": {"ok": 1}}\' > scores.json',
  ].join('\n')
  let outside = ''
  const h = await startHarness({
    projects: (r) => {
      outside = path.join(path.dirname(r), 'outside')
      return { p: sh(script, r, { env: { OUTSIDE: outside, DOCKER_SOCK: testDockerSocket() } }) }
    },
  })
  t.teardown(() => h.close())
  mkdirSync(outside)
  writeFileSync(path.join(outside, 'secret.txt'), SECRET)
  writeFileSync(path.join(outside, 'stolen.json'), '{"stolen": true, "_scores": {"stolen": 1}}')
  const passwd = readFileSync('/etc/passwd', 'utf8')

  const id = objectId()
  const dir = path.join(h.resultsDir, id)
  t.equal((await h.submit('p', { _id: id })).status, 200)
  await h.fglab.waitFor(() => existsSync(path.join(dir, 'fifo')), 20_000, 'the container to make its entries')
  const server = net.createServer()
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  await new Promise<void>((resolve) => server.listen(path.join(dir, 'sock'), resolve))

  await h.fglab.waitFinished([id], 30_000)
  await h.machine.experiments.idle()
  const e = h.fglab.experiment(id)
  t.equal(e.fields._status, 'success', 'the experiment still ends success')
  t.same([...e.files.keys()], ['normal.txt'], 'only the normal file is uploaded')
  t.equal(e.files.get('normal.txt')?.data?.toString(), 'a normal result\n')
  t.same(e.fields._scores, { ok: 1 }, 'the normal JSON file is sent')
  t.equal(e.fields.stolen, undefined, 'a symlinked JSON file is not read')
  for (const data of received(h, id)) {
    t.not(data, passwd, 'no upload holds /etc/passwd')
    t.notMatch(data, SECRET.trim(), 'no upload holds the file outside the results folder')
    t.notMatch(data, 'FGLAB_URL=', "no upload holds FGMachine's environment")
  }

  const special = ['docker.sock', 'environ', 'fifo', 'outside-dir', 'passwd', 'root', 'secret.txt', 'sock', 'stolen.json']
  for (const name of special) {
    t.ok(
      h.logs.lines.some((l) => l.msg === SKIPPED && l.file === name && l.experimentId === id),
      `the skip of ${name} is logged`,
    )
  }

  // Cleanup removed what was sent, and nothing else; no symlink was followed.
  // Cleanup removes the sent files; a symlink may be removed (as a link) or left; the FIFO and
  // the socket are left. Nothing is followed, and nothing else changes.
  const left = tree(dir)
  t.same(left.filter((e) => !e.endsWith(':link')), ['fifo:fifo', 'sock:socket'], 'the sent files are removed; the FIFO and the socket are left')
  t.same(
    left.filter((e) => e.endsWith(':link')).filter((e) => !special.includes(e.slice(0, -':link'.length))),
    [],
    'a symlink left is one of the container\'s, still a symlink',
  )
  t.ok(h.logs.lines.some((l) => /^results folder kept/.test(String(l.msg)) && l.experimentId === id), 'the kept folder is logged')
  t.equal(readFileSync('/etc/passwd', 'utf8'), passwd, '/etc/passwd is untouched')
  t.ok(lstatSync(testDockerSocket()).isSocket(), 'the Docker socket is still there')
  t.same(tree(outside), ['secret.txt:file', 'stolen.json:file'], 'the folder outside keeps its files')
  t.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), SECRET, 'a symlinked file outside is neither deleted nor changed')
  t.ok(existsSync('/etc/hostname') && existsSync('/bin'), 'the symlink to / was not followed by cleanup')
})

t.test(
  'a results file swapped for a symlink after it was seen is not followed when it is sent',
  async (t) => {
    // The container writes two results, then waits until they have been replaced by symlinks.
    const script = [
      'cd "$FGLAB_RESULTS_DIR"',
      'echo harmless > data.txt',
      'echo \'{"_scores": {"fine": 1}}\' > fields.json',
      'while [ ! -L data.txt ] || [ ! -L fields.json ]; do sleep 0.05; done',
    ].join('\n')
    let outside = ''
    const h = await startHarness({
      projects: (r) => {
        outside = path.join(path.dirname(r), 'outside')
        return { p: sh(script, r) }
      },
    })
    t.teardown(() => h.close())
    mkdirSync(outside)
    writeFileSync(path.join(outside, 'secret.txt'), SECRET)
    writeFileSync(path.join(outside, 'stolen.json'), '{"stolen": true}')
    // FGLab is down: the reports wait in the outbox, as they would behind a slow FGLab.
    h.fglab.failWith(503)
    const id = objectId()
    const dir = path.join(h.resultsDir, id)
    t.equal((await h.submit('p', { _id: id })).status, 200)
    await h.fglab.waitFor(() => h.machine.outbox.pending(id) >= 3, 20_000, 'started and both results files to be queued')
    // What the container could do itself: swap each handed-over file for a symlink.
    rmSync(path.join(dir, 'data.txt'))
    symlinkSync(path.join(outside, 'secret.txt'), path.join(dir, 'data.txt'))
    rmSync(path.join(dir, 'fields.json'))
    symlinkSync(path.join(outside, 'stolen.json'), path.join(dir, 'fields.json'))
    h.fglab.recover()
    await h.fglab.waitFinished([id], 30_000)
    await h.machine.experiments.idle()
    const e = h.fglab.experiment(id)
    t.equal(e.fields._status, 'success')
    t.equal(e.fields.stolen, undefined, 'a JSON file swapped for a symlink is not read through it')
    t.notOk([...e.files.values()].some((f) => String(f.data) === SECRET), 'a file swapped for a symlink is not uploaded through it')
    t.equal(readFileSync(path.join(outside, 'secret.txt'), 'utf8'), SECRET, 'the target survives cleanup')
  },
)

t.test(
  'a results file replaced by a folder after it was sent does not break the cleanup',
  // (Before cleanup() lstat'ed each entry, rm() threw EISDIR here and the run promise rejected unhandled.)
  async (t) => {
    const script = ['cd "$FGLAB_RESULTS_DIR"', 'echo first > a.txt', 'while [ ! -d a.txt ]; do sleep 0.05; done'].join('\n')
    const h = await startHarness({ projects: (r) => ({ p: sh(script, r) }) })
    t.teardown(() => h.close())
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    t.teardown(() => void process.off('unhandledRejection', onUnhandled))
    const id = objectId()
    const dir = path.join(h.resultsDir, id)
    await h.submit('p', { _id: id })
    await h.fglab.waitFor(() => h.fglab.experiment(id).files.has('a.txt'), 20_000, 'a.txt to be uploaded')
    // What the container could do itself.
    rmSync(path.join(dir, 'a.txt'))
    mkdirSync(path.join(dir, 'a.txt'))
    writeFileSync(path.join(dir, 'a.txt', 'inner'), 'x')
    await h.fglab.waitFinished([id], 20_000)
    await h.fglab.waitFor(() => h.machine.experiments.get(id) === undefined || unhandled.length > 0, 10_000, 'the experiment to be done')
    t.same(unhandled.map(String), [], 'no unhandled rejection')
    t.equal(h.machine.experiments.get(id), undefined, 'the experiment is done with')
    t.same(tree(dir), ['a.txt:dir', 'a.txt/inner:file'], 'the folder is left alone')
  },
)

t.test('encoded ids and path traversal get 400 before anything touches the file system', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: sh('echo ran > "$FGLAB_RESULTS_DIR/ran.txt"', r) }) })
  t.teardown(() => h.close())
  const unique = `fgm-hostile-${objectId()}`
  const escapes = [path.resolve(h.resultsDir, '../../../../tmp/x'), path.resolve(h.resultsDir, '../..', unique), path.resolve(h.dir, unique)]
  const existed = escapes.map((p) => existsSync(p))
  const before = tree(h.dir)

  for (const p of [
    '/experiments/%2e%2e%2f%2e%2e%2fetc/kill',
    '/experiments/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/kill',
    '/experiments/..%2f..%2fetc/kill',
    '/experiments/%2e%2e/kill',
    '/experiments/5f0c1e2d3a4b5c6d7e8f901%2f/kill',
    '/experiments/5f0c1e2d3a4b5c6d7e8f9012%00/kill',
    '/experiments/5f0c1e2d3a4b5c6d7e8f9012%0a/kill',
    '/experiments/%205f0c1e2d3a4b5c6d7e8f9012/kill',
    '/experiments/5f0c1e2d3a4b5c6d7e8f9012%2f..%2f../kill',
  ]) {
    const res = await rawRequest(h, 'POST', p)
    t.equal(res.status, 400, `POST ${p}`)
    t.match(res.body, { error: /24 hex digits/ })
  }
  for (const p of ['/projects/%2e%2e%2f%2e%2e%2fetc/capacity', '/projects/..%2F..%2Ftmp/capacity', '/projects/%2e%2e/capacity', '/projects/p%00/capacity']) {
    const res = await rawRequest(h, 'GET', p)
    t.equal(res.status, 400, `GET ${p}`)
  }
  for (const p of ['/projects/%2e%2e%2f%2e%2e%2ftmp', '/projects/..%2F..%2Fetc', '/projects/p%2f..']) {
    const res = await post(h, p, JSON.stringify({ _id: objectId() }))
    t.equal(res.status, 400, `POST ${p}`)
  }

  const badIds: unknown[] = [
    '5f0c1e2d3a4b5c6d7e8f901/',
    '../../../../tmp/x',
    `../../${unique}`,
    `../${unique}`,
    '5f0c1e2d3a4b5c6d7e8f9012/../../x',
    '5f0c1e2d3a4b5c6d7e8f9012/',
    '5f0c1e2d3a4b5c6d7e8f9012\n',
    '5f0c1e2d3a4b5c6d7e8f9012\u0000',
    ' 5f0c1e2d3a4b5c6d7e8f9012',
    '5f0c1e2d3a4b5c6d7e8f901g',
    '５f0c1e2d3a4b5c6d7e8f9012',
    '%2e%2e%2f%2e%2e%2fetc%2fx',
    '............................',
    '',
    5.0e23,
    ['5f0c1e2d3a4b5c6d7e8f9012'],
    { $oid: '5f0c1e2d3a4b5c6d7e8f9012' },
    null,
    true,
  ]
  for (const bad of badIds) {
    const res = await h.submit('p', { seed: 1, _id: bad } as Record<string, unknown>)
    t.equal(res.status, 400, `_id ${JSON.stringify(bad)}`)
    t.match(res.body, { error: /24 hex digits/ })
  }
  let res = await post(h, '/projects/p', '{"seed": 1}')
  t.equal(res.status, 400, 'no _id at all')

  const ws = new WebSocket(h.url.replace('http', 'ws') + '/')
  t.teardown(() => ws.terminate())
  await new Promise((resolve) => ws.once('open', resolve))
  for (const m of ['experiments:../../etc/passwd', 'experiments:%2e%2e%2f', 'experiments:5f0c1e2d3a4b5c6d7e8f9012/../x']) ws.send(m)

  res = await fetch(`${h.url}/projects`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ project_id: '../../x' }) })
  t.equal(res.status, 400, 'a project id with a path is refused')

  t.same(tree(h.dir), before, 'nothing under the machine\'s folder changed: no results folder was made')
  t.same(
    escapes.map((p) => existsSync(p)),
    existed,
    'nothing was made outside it either',
  )
  t.same(containersOf(h), [], 'no container was made')
  t.equal(h.machine.scheduler.leases().length, 0, 'nothing was reserved')
  t.equal(h.fglab.experiments.size, 0, 'nothing was reported')
  t.equal((await fetch(`${h.url}/health`)).status, 200)

  // And a real one still runs, in its own folder, which is removed afterwards.
  const id = objectId()
  t.equal((await h.submit('p', { _id: id })).status, 200)
  await h.fglab.waitFinished([id], 20_000)
  await h.machine.experiments.idle()
  t.equal(h.fglab.experiment(id).files.get('ran.txt')?.data?.toString(), 'ran\n')
  t.same(tree(h.resultsDir), [], 'no stray entries in the results tree afterwards')
})

t.test('ids are matched case-insensitively as hex, and then used exactly as given', async (t) => {
  // OBJECT_ID is /^[0-9a-f]{24}$/i: upper-case hex is an id. FGLab itself only sends lower case.
  const h = await startHarness({ projects: (r) => ({ p: sh('echo started; sleep 30', r, { capacity: 0.5 }) }) })
  t.teardown(() => h.close())
  const upper = objectId().toUpperCase()
  const dir = path.join(h.resultsDir, upper)
  let res = await h.submit('p', { _id: upper })
  t.equal(res.status, 200, 'an upper-case id is accepted to start')
  await h.fglab.waitFor(() => h.machine.experiments.get(upper)?.state === 'running', 20_000, 'running')
  t.ok(lstatSync(dir).isDirectory(), 'its results folder is named by the id as given')
  t.same(tree(h.resultsDir), [`${upper}:dir`], 'and nothing else is made')
  res = await h.submit('p', { _id: upper })
  t.equal(res.status, 409, 'the same id again is a conflict')
  const lower = await fetch(`${h.url}/experiments/${upper.toLowerCase()}/kill`, { method: 'POST' })
  t.equal(lower.status, 200, 'the original\'s answer…')
  t.equal(h.machine.experiments.get(upper)?.state, 'running', '…but ids are compared exactly: the lower-case spelling is another experiment, and this one runs on')
  t.notOk(h.machine.experiments.get(upper)?.killed)
  const kill = await fetch(`${h.url}/experiments/${upper}/kill`, { method: 'POST' })
  t.equal(kill.status, 200, 'the id as given kills it')
  await h.machine.experiments.idle()
  t.same(tree(h.resultsDir), [], 'its folder is removed afterwards')
  t.same(containersOf(h), [], 'its container too')
})

t.test('__proto__, constructor and prototype in request bodies pollute nothing', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: sh('true', r) }) })
  t.teardown(() => h.close())
  const refused = [
    `{"__proto__": {"polluted": 1}, "_id": "${objectId()}"}`,
    `{"a": {"__proto__": {"polluted": 1}}, "_id": "${objectId()}"}`,
    `{"a": [{"b": {"__proto__": {"polluted": 1}}}], "_id": "${objectId()}"}`,
    `{"\\u005f_proto__": {"polluted": 1}, "_id": "${objectId()}"}`,
    `{"constructor": {"prototype": {"polluted": 1}}, "_id": "${objectId()}"}`,
    `{"a": {"constructor": {"prototype": {"polluted": 1}}}, "_id": "${objectId()}"}`,
  ]
  for (const body of refused) {
    const res = await post(h, '/projects/p', body)
    t.equal(res.status, 400, body)
    noPollution(t, body)
  }
  let res = await fetch(`${h.url}/projects`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"project_id": "x", "__proto__": {"polluted": 1}}' })
  t.equal(res.status, 400, 'PUT /projects refuses __proto__ too')
  t.equal(h.machine.scheduler.leases().length, 0, 'nothing was reserved')
  t.equal(h.fglab.experiments.size, 0, 'nothing was started')

  // `constructor` and `prototype` as plain option names (no `constructor.prototype` chain) are
  // harmless data: Fastify lets them through, and they only become argv.
  const id = objectId()
  res = await post(h, '/projects/p', JSON.stringify({ constructor: 1, prototype: { polluted: 1 }, _id: id }))
  t.equal(res.status, 200, 'plain constructor/prototype keys are options like any other')
  t.same(await res.json(), { constructor: 1, prototype: { polluted: 1 }, _id: id }, 'echoed as sent')
  await h.fglab.waitFinished([id], 20_000)
  t.equal(h.fglab.experiment(id).fields._status, 'success')
  const started = h.logs.lines.find((l) => l.msg === 'starting experiment' && l.experimentId === id)
  t.same(started?.argv, ['-c', 'true', 'exp', 'constructor', '1', 'prototype', '{"polluted":1}', '_id', id], 'they are only argv')
  noPollution(t, 'after the run')
})

t.test(
  '"Add to Machine" refuses __proto__ as a project id',
  async (t) => {
    const h = await startHarness({ projects: (r) => ({ p: sh('true', r) }) })
    t.teardown(() => h.close())
    const file = path.join(h.dir, 'projects.json')
    const before = readFileSync(file, 'utf8')
    const res = await fetch(`${h.url}/projects`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"project_id": "__proto__"}' })
    t.equal(res.status, 400, 'refused')
    t.equal(readFileSync(file, 'utf8'), before, 'projects.json unchanged')
    noPollution(t, 'after "Add to Machine"')
  },
)

t.test('a results JSON file with __proto__ sends its other fields and pollutes nothing', async (t) => {
  const json = '{"__proto__": {"polluted": 1}, "_scores": {"a": 1}, "nested": {"x": 2}}'
  const h = await startHarness({ projects: (r) => ({ p: sh(`printf '%s' '${json}' > "$FGLAB_RESULTS_DIR/r.json"`, r) }) })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await h.fglab.waitFinished([id], 20_000)
  const e = h.fglab.experiment(id)
  t.equal(e.fields._status, 'success')
  t.same(e.fields._scores, { a: 1 }, '_scores is sent')
  t.same(e.fields.nested, { x: 2 })
  const updates = h.fglab.calls.filter((c) => c.method === 'PUT' && c.path === `/api/v1/experiments/${id}` && c.body !== undefined)
  const withScores = updates.filter((c) => Object.hasOwn(c.body as object, '_scores'))
  t.equal(withScores.length, 1, 'the file is sent once')
  t.notOk(
    updates.some((c) => Object.hasOwn(c.body as object, '__proto__')),
    '__proto__ is not sent',
  )
  t.equal(Object.getPrototypeOf(e.fields), Object.prototype, "FGLab's document keeps its prototype")
  t.equal(e.files.size, 0, 'nothing is uploaded as a file')
  noPollution(t, 'after sending the results')
})

t.test('malformed WebSocket messages never crash the service', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: sh('echo hello from the experiment; sleep 30', r) }) })
  t.teardown(() => h.close())
  const id = objectId()
  await h.submit('p', { _id: id })
  await h.fglab.waitFor(() => h.machine.logHub.backlog(id).length > 0, 20_000, 'output')
  const wsUrl = h.url.replace('http', 'ws') + '/'
  const open = async () => {
    const ws = new WebSocket(wsUrl)
    t.teardown(() => ws.terminate())
    const messages: string[] = []
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
    ws.on('message', (d) => messages.push(d.toString()))
    ws.on('error', () => undefined)
    await new Promise((resolve) => ws.once('open', resolve))
    return { ws, messages, closed }
  }

  // Binary frames and garbage subscriptions are ignored; the same socket then works.
  const a = await open()
  a.ws.send(Buffer.from([0, 1, 2, 255]), { binary: true })
  a.ws.send(Buffer.from(`experiments:${id}`), { binary: true })
  for (const m of [
    'experiments:',
    'experiments:garbage',
    'experiments:\u0000\u0001',
    `experiments:${id}x`,
    `experiments:${id}\n`,
    `experiments: ${id}`,
    `EXPERIMENTS:${id}`,
    'experiments:' + 'f'.repeat(60_000),
    '{"experiments": 1}',
    '',
    '\u{1F4A9}'.repeat(100),
  ]) {
    a.ws.send(m)
  }
  await new Promise((r) => setTimeout(r, 200))
  t.same(a.messages, [], 'nothing answered any of them')
  a.ws.send(`experiments:${id}`)
  await h.fglab.waitFor(() => a.messages.some((m) => m.includes('hello from the experiment')), 5000, 'the subscription')
  t.same(JSON.parse(a.messages[0]!), { stdout: 'hello from the experiment\n' }, 'the socket still works')

  // Over maxPayload (64 KiB): the server closes that socket with 1009.
  const b = await open()
  b.ws.send('experiments:' + 'a'.repeat(64 * 1024 + 1))
  t.equal(await b.closed, 1009, 'a message over 64 KiB closes the socket (1009, too big)')

  // Invalid UTF-8 in a text frame: 1007.
  const c = await open()
  c.ws.send(Buffer.from([0x65, 0x78, 0xff, 0xfe, 0xc3, 0x28]), { binary: false })
  t.equal(await c.closed, 1007, 'invalid UTF-8 closes the socket (1007)')

  // Not a WebSocket frame at all, written on the raw connection: a protocol error.
  const d = await open()
  const raw = (d.ws as unknown as { _socket: net.Socket })._socket
  raw.write(Buffer.from([0x8f, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00]))
  const code = await Promise.race([d.closed, new Promise<number>((r) => setTimeout(() => r(-1), 5000))])
  t.ok(code === 1002 || code === 1006, `a frame with a reserved opcode ends that connection (${code})`)

  // A plain TCP client sending a broken upgrade request.
  await new Promise<void>((resolve) => {
    const u = new URL(h.url)
    const s = net.connect(Number(u.port), u.hostname, () => {
      s.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\n\r\n\x00\xff')
      setTimeout(() => s.destroy(), 300)
    })
    s.on('error', () => undefined)
    s.on('close', () => resolve())
  })

  t.equal(a.ws.readyState, WebSocket.OPEN, 'the first socket is still open')
  const e = await open()
  e.ws.send(`experiments:${id}`)
  await h.fglab.waitFor(() => e.messages.some((m) => m.includes('hello from the experiment')), 5000, 'a new subscription')
  t.pass('a new socket works')
  const health = await fetch(`${h.url}/health`)
  t.equal(health.status, 200, 'GET /health answers 200')
  await fetch(`${h.url}/experiments/${id}/kill`, { method: 'POST' })
  await h.fglab.waitFinished([id], 20_000)
})

t.test('nothing in the POST body changes how the container is made', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: sh('sleep 30', r) }) })
  t.teardown(() => h.close())
  const id = objectId()
  const body = {
    privileged: true,
    HostConfig: { Privileged: true, Binds: ['/:/host'], CapAdd: ['ALL'], SecurityOpt: ['seccomp=unconfined'] },
    Binds: ['/etc:/host-etc'],
    image: 'alpine',
    Image: 'alpine:latest',
    '--privileged': true,
    '--volume': '/:/host',
    '-v': '/var/run/docker.sock:/var/run/docker.sock',
    Cmd: ['id'],
    Entrypoint: 'sh',
    Env: ['LD_PRELOAD=/x.so'],
    User: '0',
    NetworkMode: 'host',
    CapAdd: ['SYS_ADMIN'],
    SecurityOpt: ['apparmor=unconfined'],
    volumes: ['/:/host'],
    network: 'host',
    user: 'root',
    shm_size: '64g',
    memory: '1',
    cwd: '/etc',
    env: { LD_PRELOAD: '/x.so' },
    _id: id,
  }
  t.equal((await h.submit('p', body)).status, 200)
  await h.fglab.waitFor(() => h.fglab.experiment(id).started === 1, 20_000, 'started')
  const [cid] = containersOf(h)
  t.ok(cid, 'one container')
  const info = JSON.parse(execFileSync('docker', ['inspect', cid!], { encoding: 'utf8' }))[0]
  const dir = path.join(h.resultsDir, id)
  t.equal(info.HostConfig.Privileged, false, 'not privileged')
  t.same(info.HostConfig.SecurityOpt, ['no-new-privileges'], 'no-new-privileges, and nothing else')
  t.same(info.HostConfig.Binds, [`${dir}:${dir}`], 'only the results folder is mounted')
  t.same(
    info.Mounts.map((m: { Source: string; Destination: string }) => `${m.Source}:${m.Destination}`),
    [`${dir}:${dir}`],
  )
  t.notOk(info.HostConfig.CapAdd?.length, 'no capabilities added')
  t.not(info.HostConfig.NetworkMode, 'host', 'not on the host network')
  t.equal(info.HostConfig.ShmSize, 64 * 1024 * 1024, "Docker's default /dev/shm")
  t.equal(info.HostConfig.Memory, 0, 'no memory setting from the body')
  t.equal(info.Config.Image, image, "the project's image")
  const imageId = execFileSync('docker', ['image', 'inspect', '--format', '{{.Id}}', image], { encoding: 'utf8' }).trim()
  t.equal(info.Image, imageId)
  t.equal(info.Config.User, '', "the image's user")
  t.equal(info.Config.WorkingDir, '', "the image's working directory")
  t.equal(info.Config.Entrypoint, null, 'no entrypoint')
  t.notOk(
    (info.Config.Env as string[]).some((v) => v.startsWith('LD_PRELOAD')),
    'no variable from the body',
  )
  const options = [
    'privileged', 'true',
    'HostConfig', JSON.stringify(body.HostConfig),
    'Binds', JSON.stringify(body.Binds),
    'image', 'alpine',
    'Image', 'alpine:latest',
    '--privileged', 'true',
    '--volume', '/:/host',
    '-v', '/var/run/docker.sock:/var/run/docker.sock',
    'Cmd', '["id"]',
    'Entrypoint', 'sh',
    'Env', '["LD_PRELOAD=/x.so"]',
    'User', '0',
    'NetworkMode', 'host',
    'CapAdd', '["SYS_ADMIN"]',
    'SecurityOpt', '["apparmor=unconfined"]',
    'volumes', '["/:/host"]',
    'network', 'host',
    'user', 'root',
    'shm_size', '64g',
    'memory', '1',
    'cwd', '/etc',
    'env', '{"LD_PRELOAD":"/x.so"}',
    '_id', id,
  ]
  t.same(info.Config.Cmd, ['sh', '-c', 'sleep 30', 'exp', ...options], 'the options only became argv of the program')
  await fetch(`${h.url}/experiments/${id}/kill`, { method: 'POST' })
  await h.fglab.waitFinished([id], 20_000)
})

const TOKEN = 'hostile-test-token-0123456789'

/** Start, kill and reset with and without FGMACHINE_TOKEN, against a real container. */
async function checkToken(t: Test, h: Harness, url: string): Promise<void> {
  const call = (method: string, p: string, headers: Record<string, string>, body?: unknown) =>
    fetch(url + p, { method, headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) })
  const id = objectId()
  const wrong: Array<Record<string, string>> = [{}, { authorization: 'Bearer nope' }, { 'x-fgmachine-token': TOKEN + 'x' }]
  for (const headers of wrong) {
    const res = await call('POST', '/projects/p', headers, { _id: id })
    t.equal(res.status, 401, `start refused with ${JSON.stringify(headers)}`)
    t.match(await res.json(), { error: /FGMACHINE_TOKEN/ })
  }
  t.equal((await call('PUT', '/projects', {}, { project_id: 'q' })).status, 401, '"Add to Machine" refused')
  t.equal((await call('POST', '/capacity/reset', {})).status, 401, 'reset refused')
  t.same(containersOf(h), [], 'no container was made')
  t.equal(h.machine.scheduler.leases().length, 0, 'nothing was reserved')
  t.equal((await call('GET', '/projects/p/capacity', {})).status, 200, 'capacity stays open')

  t.equal((await call('POST', '/projects/p', { authorization: `Bearer ${TOKEN}` }, { _id: id })).status, 200, 'start with the token')
  await h.fglab.waitFor(() => h.fglab.experiment(id).started === 1, 20_000, 'started')
  t.equal(containersOf(h).length, 1, 'its container runs')
  t.equal((await call('POST', `/experiments/${id}/kill`, {})).status, 401, 'kill refused without the token')
  t.equal(h.machine.experiments.get(id)?.killed, false, 'and it runs on')
  t.equal((await call('POST', `/experiments/${id}/kill`, { 'x-fgmachine-token': TOKEN })).status, 200, 'kill with the token')
  await h.fglab.waitFinished([id], 20_000)
  t.equal(h.fglab.experiment(id).fields._status, 'fail')
  t.equal((await call('POST', '/capacity/reset', { authorization: `Bearer ${TOKEN}` })).status, 200, 'reset with the token')
}

t.test('FGMACHINE_TOKEN guards starting and killing real experiments (buildApp on the machine\'s services)', async (t) => {
  const h = await startHarness({ projects: (r) => ({ p: sh('sleep 30', r) }) })
  t.teardown(() => h.close())
  const m = h.machine
  const app = await buildApp(
    { projects: m.projects, scheduler: m.scheduler, experiments: m.experiments, logHub: m.logHub, gpus: m.gpus, machineUrl: 'http://127.0.0.1:0', machineId: () => m.registration.machineId },
    { token: TOKEN },
  )
  t.teardown(() => app.close())
  await checkToken(t, h, await app.listen({ host: '127.0.0.1', port: 0 }))
})

t.test(
  'FGMACHINE_TOKEN from the configuration reaches the app',
  async (t) => {
    const h = await startHarness({ projects: (r) => ({ p: sh('sleep 30', r) }), config: { token: TOKEN } })
    t.teardown(() => h.close())
    await checkToken(t, h, h.url)
  },
)

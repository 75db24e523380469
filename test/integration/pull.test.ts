import { execFileSync } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { DockerContainerClient, type DockerClientOptions } from '../../src/docker/docker-container-client.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureBusyboxImage, testDockerHost } from '../helpers/images.js'
import { startRegistry, type TestRegistry } from '../helpers/registry.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

/** A registry that accepts connections and never answers (Docker trusts localhost registries over plain HTTP). */
async function hungRegistry(t: Test): Promise<{ image: string; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>()
  const registry = createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
  })
  await new Promise<void>((r) => registry.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    registry.close()
  })
  const port = (registry.address() as { port: number }).port
  return { image: `127.0.0.1:${port}/fgmachine-test/hangs:1`, sockets }
}

t.test('a pull that makes no progress is cancelled; it fails only the experiments that needed it, with the reason', async (t) => {
  const { image: hung, sockets } = await hungRegistry(t)
  const h = await startHarness({
    config: { pullStallMs: 2000 },
    projects: (r) => ({
      hung: { image: hung, command: 'true', capacity: 0.25, results: r },
      fine: { image, command: 'sh', args: ['-c', 'echo ok'], capacity: 0.25, results: r },
    }),
  })
  t.teardown(() => h.close())
  const a = objectId()
  const b = objectId()
  const c = objectId()
  // Two starts of the same image share one pull.
  for (const id of [a, b]) t.equal((await h.submit('hung', { _id: id })).status, 200)
  t.equal((await h.submit('fine', { _id: c })).status, 200)
  await h.fglab.waitFinished([a, b, c], 60_000)
  for (const id of [a, b]) {
    const e = h.fglab.experiment(id)
    t.equal(e.fields._status, 'fail')
    t.match(e.fields.reason, /the pull made no progress for 2 s; cancelled/)
  }
  t.equal(h.fglab.experiment(c).fields._status, 'success', 'an experiment with a local image is not held up')
  t.ok(sockets.size >= 1, 'Docker did try the registry')
  await h.machine.experiments.idle()
  t.equal((await h.capacity('hung')).body.capacity, 4, 'their capacity is released')
})

t.test('kill while the image is still being pulled: no container is made, nothing is reported started, it ends fail', async (t) => {
  const { image: hung, sockets } = await hungRegistry(t)
  const h = await startHarness({
    config: { pullStallMs: 600_000 },
    projects: (r) => ({ hung: { image: hung, command: 'true', capacity: 0.5, results: r } }),
  })
  t.teardown(() => h.close())
  const id = objectId()
  t.equal((await h.submit('hung', { _id: id })).status, 200)
  await h.fglab.waitFor(() => sockets.size >= 1, 20_000, 'the pull reaching the registry')
  const res = await fetch(`${h.url}/experiments/${id}/kill`, { method: 'POST' })
  t.same(await res.json(), { status: 'killed' })
  // Long before the pull's own ten-minute stall limit.
  await h.fglab.waitFinished([id], 30_000)
  const e = h.fglab.experiment(id)
  t.equal(e.fields._status, 'fail')
  t.match(e.fields, { killed: true, reason: 'killed before it started' })
  t.equal(e.started, 0, 'never reported started')
  const { execFileSync } = await import('node:child_process')
  t.equal(execFileSync('docker', ['ps', '-aq', '--filter', `label=fgmachine.experiment=${id}`], { encoding: 'utf8' }).trim(), '', 'no container')
  await h.machine.experiments.idle()
  t.equal((await h.capacity('hung')).body.capacity, 2, 'its capacity is released')
})

/** A registry of the test's own (see helpers/registry.ts), closed and its images removed from the engine after the test. */
async function registry(t: Test, opts: Parameters<typeof startRegistry>[0] = {}): Promise<TestRegistry> {
  const reg = await startRegistry(opts)
  t.teardown(async () => {
    await reg.close()
    // By id: an image whose tag moved on is left untagged, still the registry's.
    const ids = execFileSync('docker', ['images', '-aq', '--no-trunc', '--filter', `reference=${reg.host}/*/*`], { encoding: 'utf8' })
    const untagged = execFileSync('docker', ['images', '-q', '--no-trunc', '--filter', 'dangling=true'], { encoding: 'utf8' })
    const ours = new Set(ids.split('\n').filter(Boolean))
    for (const id of untagged.split('\n').filter(Boolean)) {
      const names = execFileSync('docker', ['image', 'inspect', '--format', '{{join .RepoDigests " "}}', id], { encoding: 'utf8' })
      if (names.includes(`${reg.host}/`)) ours.add(id)
    }
    if (ours.size) execFileSync('docker', ['rmi', '-f', ...ours], { stdio: 'ignore' })
  })
  return reg
}

/** A Docker config folder of the test's own, with a PATH folder for credential helpers. */
function dockerConfigDir(t: Test) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-docker-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const bin = path.join(dir, 'bin')
  mkdirSync(bin)
  return { dir, bin, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, write: (c: unknown) => writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c)) }
}

/** The Docker client FGMachine makes, with the options a test needs. */
const client = (opts: DockerClientOptions) => new DockerContainerClient(testDockerHost(), { pullStallMs: 60_000, ...opts })
const output = (h: Harness, id: string) => h.machine.logHub.backlog(id).map((c) => c.text).join('')

t.test('a slow pull tells its progress every few seconds: in the log at info, and in the live output', async (t) => {
  const reg = await registry(t)
  const img = reg.put('fgmachine-test/slow', '1', { files: { '/hello': 'pulled and ran\n' }, padBytes: 2_000_000 })
  const hold = reg.hold(0.5)
  t.teardown(() => hold.release())
  const h = await startHarness({
    projects: (r) => ({ slow: { image: img.ref, command: 'sh', args: ['-c', 'cat /hello'], capacity: 0.5, results: r } }),
    machine: { containerClient: client({ pullProgressIntervalMs: 200, dockerConfigDir: dockerConfigDir(t).dir }) },
  })
  t.teardown(() => h.close())
  const id = objectId()
  t.equal((await h.submit('slow', { _id: id })).status, 200)
  await hold.reached
  // Halfway through its layers, the registry waits: the progress must be told meanwhile.
  // Docker learns a layer's size when that layer starts to come, so a line may name one
  // layer's size before the other's is known: wait for one that has both (the whole size).
  const midway = (l: Record<string, unknown>) =>
    l.msg === 'pulling image' && l.image === img.ref && (l.percent as number) > 0 && (l.percent as number) < 100 && l.totalBytes === img.layerBytes
  await h.fglab.waitFor(() => h.logs.lines.some(midway), 20_000, 'progress in the log')
  const line = h.logs.lines.find(midway)!
  t.match(line, { level: 30, phase: 'downloading', layers: 2, totalBytes: img.layerBytes })
  t.ok((line.downloadedBytes as number) > 0 && (line.downloadedBytes as number) < img.layerBytes, 'bytes downloaded of the total')
  t.notOk('experimentId' in line, 'one line per image, whoever waits for it')
  const live = new RegExp(`\\[fgmachine\\] pulling image ${img.ref.replace(/[.]/g, '\\.')}: [0-2]/2 layers, [\\d.]+ [kM]B of [\\d.]+ MB \\(\\d+%\\)\n`)
  await h.fglab.waitFor(() => live.test(output(h, id)), 20_000, 'progress in the live output')
  hold.release()
  await h.fglab.waitFinished([id], 60_000)
  t.equal(h.fglab.experiment(id).fields._status, 'success')
  const out = output(h, id)
  t.match(out, `[fgmachine] pulling image ${img.ref}\n`, 'its start')
  t.match(out, new RegExp(`\\[fgmachine\\] pulled image ${img.ref.replace(/[.]/g, '\\.')}: 2 layers, [\\d.]+ MB in \\d+ s\n`), 'its end')
  t.match(out, 'pulled and ran\n')
  t.match(h.logs.find('pulled image'), { level: 30, image: img.ref, phase: 'done', percent: 100 })
  t.notOk(h.logs.lines.some((l) => l.msg === 'pulling image' && l.level !== 30), 'no progress at debug any more')
})

t.test('a registry that needs credentials: without them the reason says `docker login`; with auths or a credential helper the pull works', async (t) => {
  const reg = await registry(t, { auth: { username: 'fgm', password: 's3cret' } })
  const one = reg.put('fgmachine-test/private-one', '1', { files: { '/hello': 'one\n' } })
  const two = reg.put('fgmachine-test/private-two', '1', { files: { '/hello': 'two\n' } })
  const cfg = dockerConfigDir(t)
  const h = await startHarness({
    projects: (r) => ({
      one: { image: one.ref, command: 'sh', args: ['-c', 'cat /hello'], capacity: 0.5, results: r },
      two: { image: two.ref, command: 'sh', args: ['-c', 'cat /hello'], capacity: 0.5, results: r },
    }),
    machine: { containerClient: client({ dockerConfigDir: cfg.dir, env: cfg.env }) },
  })
  t.teardown(() => h.close())

  const refused = objectId()
  await h.submit('one', { _id: refused })
  await h.fglab.waitFinished([refused], 60_000)
  const e = h.fglab.experiment(refused)
  t.equal(e.fields._status, 'fail')
  t.match(e.fields.reason, `run \`docker login ${reg.host}\` on the host (FGMachine reads ~/.docker/config.json or DOCKER_CONFIG; in a container mount it, e.g. -v ~/.docker/config.json:/root/.docker/config.json:ro)`)
  t.match(e.fields.reason, /no basic auth credentials/)

  // `docker login` after FGMachine started: the next pull reads it.
  cfg.write({ auths: { [reg.host]: { auth: Buffer.from('fgm:s3cret').toString('base64') } } })
  const withAuths = objectId()
  await h.submit('one', { _id: withAuths })
  await h.fglab.waitFinished([withAuths], 60_000)
  t.equal(h.fglab.experiment(withAuths).fields._status, 'success', 'auths in config.json')
  t.match(output(h, withAuths), 'one\n')

  // A credential helper, as `docker login` with credHelpers leaves it: no password in the file.
  const asked = path.join(cfg.dir, 'asked')
  writeFileSync(
    path.join(cfg.bin, 'docker-credential-fgmtest'),
    `#!/bin/sh\nread -r reg\nprintf '%s\\n' "$reg" >> '${asked}'\necho '{"ServerURL":"'"$reg"'","Username":"fgm","Secret":"s3cret"}'\n`,
  )
  chmodSync(path.join(cfg.bin, 'docker-credential-fgmtest'), 0o755)
  cfg.write({ auths: { [reg.host]: {} }, credHelpers: { [reg.host]: 'fgmtest' } })
  const withHelper = objectId()
  await h.submit('two', { _id: withHelper })
  await h.fglab.waitFinished([withHelper], 60_000)
  t.equal(h.fglab.experiment(withHelper).fields._status, 'success', 'credHelpers')
  t.match(output(h, withHelper), 'two\n')
  t.same(readFileSync(asked, 'utf8'), `${reg.host}\n`, 'the helper was asked for this registry')
})

t.test('pull "always": a new experiment runs what the tag names now; "missing" keeps the local copy; a failed refresh fails and says why', async (t) => {
  const reg = await registry(t)
  const img = reg.put('fgmachine-test/moving', 'latest', { files: { '/version': 'one\n' } })
  const h = await startHarness({
    projects: (r) => ({
      kept: { image: img.ref, command: 'sh', args: ['-c', 'cat /version'], capacity: 0.25, results: r },
      fresh: { image: img.ref, command: 'sh', args: ['-c', 'cat /version'], capacity: 0.25, results: r, pull: 'always' },
    }),
    machine: { containerClient: client({ dockerConfigDir: dockerConfigDir(t).dir }) },
  })
  t.teardown(() => h.close())
  const run = async (project: string) => {
    const id = objectId()
    t.equal((await h.submit(project, { _id: id })).status, 200)
    await h.fglab.waitFinished([id], 60_000)
    return { id, fields: h.fglab.experiment(id).fields, out: output(h, id) }
  }
  const manifests = () => reg.count('HEAD', /^\/v2\/fgmachine-test\/moving\/manifests\//) + reg.count('GET', /^\/v2\/fgmachine-test\/moving\/manifests\//)

  t.match((await run('kept')).out, 'one\n', 'missing: pulled')
  reg.put('fgmachine-test/moving', 'latest', { files: { '/version': 'two\n' } })
  const before = manifests()
  t.match((await run('kept')).out, 'one\n', 'missing: the local copy, not pulled again')
  t.equal(manifests(), before, 'the registry was not asked')
  const fresh = await run('fresh')
  t.equal(fresh.fields._status, 'success')
  t.match(fresh.out, 'two\n', 'always: what the tag names now')
  t.ok(manifests() > before, 'the registry was asked')

  await reg.close()
  const failed = await run('fresh')
  t.equal(failed.fields._status, 'fail')
  t.match(failed.fields.reason, `cannot pull image ${img.ref}`)
  t.match(failed.fields.reason, 'the copy of the image on this machine was not used because the project says "pull": "always" (set "pull": "missing" to run the local copy)')
})

t.test('at load: an image that cannot be pulled is said at once; prepull pulls in the background, sharing the pull with a start', async (t) => {
  const open = await registry(t)
  const big = open.put('fgmachine-test/prepulled', '1', { files: { '/hello': 'ready\n' }, padBytes: 1_000_000 })
  const closed = await registry(t, { auth: { username: 'fgm', password: 'pw' } })
  const locked = closed.put('fgmachine-test/locked', '1')
  const docker = client({ pullProgressIntervalMs: 200, dockerConfigDir: dockerConfigDir(t).dir })
  // Held halfway, so that an experiment can join the pre-pull.
  const hold = open.hold(0.5)
  t.teardown(() => hold.release())
  const h = await startHarness({
    projects: (r) => ({
      ready: { image, command: 'true', capacity: 0.25, results: r },
      pre: { image: big.ref, command: 'sh', args: ['-c', 'cat /hello'], capacity: 0.25, results: r, prepull: true },
      locked: { image: locked.ref, command: 'true', capacity: 0.25, results: r },
      missing: { image: `${open.host}/fgmachine-test/nothing:1`, command: 'true', capacity: 0.25, results: r },
    }),
    machine: { containerClient: docker },
  })
  t.teardown(() => h.close())
  const warned = (ref: string) => h.logs.lines.find((l) => l.msg === 'image not present locally and cannot be pulled' && l.image === ref)
  await h.fglab.waitFor(
    () => warned(locked.ref) !== undefined && warned(`${open.host}/fgmachine-test/nothing:1`) !== undefined && h.logs.find('pre-pulling image') !== undefined,
    20_000,
    'the load-time check',
  )
  t.match(warned(locked.ref), { level: 40, projects: ['locked'], reason: new RegExp(`unauthorized|no basic auth credentials.*run \`docker login ${closed.host.replace(/[.]/g, '\\.')}\``) })
  t.match(warned(`${open.host}/fgmachine-test/nothing:1`), { level: 40, projects: ['missing'], reason: /manifest unknown/ })
  t.notOk(h.logs.lines.some((l) => l.component === 'docker' && l.image === image), 'an image that is here: nothing said')
  t.match(h.logs.find('pre-pulling image'), { image: big.ref, projects: ['pre'] }, 'the machine pre-pulls it as soon as projects.json names it')
  await hold.reached
  const id = objectId()
  await h.submit('pre', { _id: id })
  await h.fglab.waitFor(() => output(h, id).includes('[fgmachine] pulling image'), 20_000, 'the start waiting on the pull')
  hold.release()
  await h.fglab.waitFinished([id], 60_000)
  t.equal(h.fglab.experiment(id).fields._status, 'success')
  t.match(output(h, id), 'ready\n')
  t.match(h.logs.find('pulled image'), { image: big.ref, phase: 'done' }, 'the pre-pull logs its progress too')
  // (Docker's check whether it can be pulled reads the manifest and config, not the layers.)
  t.same(
    big.layers.map((l) => open.count('GET', `/v2/fgmachine-test/prepulled/blobs/${l}`)),
    [1, 1],
    'one pull: each layer fetched once',
  )
})

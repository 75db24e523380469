import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import Docker from 'dockerode'
import t, { type Test } from 'tap'
import { ImagePuller } from '../../src/docker/image-puller.js'

/**
 * A dockerode whose engine knows the images in `present` and answers each pull
 * with a progress stream the test ends (`finish`); `pulls` keeps what each pull sent.
 */
function engine(present: Set<string>) {
  const docker = new Docker({ socketPath: '/nonexistent/docker.sock' })
  const pulls: Array<{ image: string; auth: unknown; finish: (error?: string, bytes?: number) => void }> = []
  docker.pull = (async (image: string, opts: { authconfig?: unknown }) => {
    const s = new PassThrough()
    pulls.push({
      image,
      auth: opts.authconfig,
      finish: (error, bytes = 0) => {
        if (bytes) s.write(JSON.stringify({ status: 'Downloading', id: 'layer1', progressDetail: { current: bytes, total: bytes } }) + '\r\n')
        s.end(JSON.stringify(error ? { error, errorDetail: { message: error } } : { status: `Status: Downloaded newer image for ${image}` }) + '\r\n')
        if (!error) present.add(image)
      },
    })
    return s
  }) as unknown as Docker['pull']
  docker.getImage = ((name: string) => ({
    inspect: async () => {
      if (!present.has(name)) throw Object.assign(new Error('no such image'), { statusCode: 404 })
      return {}
    },
  })) as unknown as Docker['getImage']
  return { docker, pulls }
}

function configDir(t: Test, config: string) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-puller-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(path.join(dir, 'config.json'), config)
  return dir
}

const until = async (cond: () => boolean) => {
  while (!cond()) await new Promise((r) => setImmediate(r))
}

t.test("'missing' pulls only what is not here; 'always' pulls every time; concurrent starts share one pull", async (t) => {
  const { docker, pulls } = engine(new Set(['team/here:1']))
  const puller = new ImagePuller(docker, { pullStallMs: 60_000, auth: { configDir: configDir(t, '{}') } })
  await puller.ensure('team/here:1')
  t.equal(pulls.length, 0, 'here: no pull')
  const a = puller.ensure('team/here:1', { policy: 'always' })
  const b = puller.ensure('team/here:1', { policy: 'always' })
  await until(() => pulls.length === 1)
  pulls[0]!.finish()
  await Promise.all([a, b])
  t.equal(pulls.length, 1, 'two starts, one pull')
  const c = puller.ensure('team/here:1', { policy: 'always' })
  await until(() => pulls.length === 2)
  pulls[1]!.finish()
  await c
  t.equal(pulls.length, 2, 'and the next start pulls again')
})

t.test("'always' whose pull fails fails, as `docker run --pull always`, and says the local copy was not used", async (t) => {
  const { docker, pulls } = engine(new Set(['team/here:1']))
  const puller = new ImagePuller(docker, { pullStallMs: 60_000, auth: { configDir: configDir(t, '{}') } })
  const p = puller.ensure('team/here:1', { policy: 'always' })
  await until(() => pulls.length === 1)
  pulls[0]!.finish('Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host')
  await t.rejects(p, {
    message:
      'cannot pull image team/here:1: Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host; the copy of the image on this machine was not used because the project says "pull": "always" (set "pull": "missing" to run the local copy)',
  })
})

t.test('credentials from the Docker config go with the pull; a refusal says how to log in', async (t) => {
  const { docker, pulls } = engine(new Set())
  const auth = Buffer.from('alice:pw').toString('base64')
  const dir = configDir(t, JSON.stringify({ auths: { 'registry.example.com:5000': { auth } } }))
  const puller = new ImagePuller(docker, { pullStallMs: 60_000, auth: { configDir: dir } })
  const p = puller.ensure('registry.example.com:5000/team/m:1')
  await until(() => pulls.length === 1)
  t.same(pulls[0]!.auth, { username: 'alice', password: 'pw', serveraddress: 'registry.example.com:5000' })
  pulls[0]!.finish('unauthorized: authentication required')
  await t.rejects(p, {
    message: new RegExp(
      `^cannot pull image registry\\.example\\.com:5000/team/m:1: unauthorized: authentication required; the registry refused the credentials from auths\\["registry\\.example\\.com:5000"\\] in ${dir}/config\\.json: run \`docker login registry\\.example\\.com:5000\` on the host again`,
    ),
  })
  const q = puller.ensure('other.example/m:1')
  await until(() => pulls.length === 2)
  t.equal(pulls[1]!.auth, undefined, 'no entry: no credentials')
  pulls[1]!.finish('Head "http://other.example/v2/m/manifests/1": no basic auth credentials')
  await t.rejects(q, { message: /no basic auth credentials; run `docker login other\.example` on the host \(FGMachine reads ~\/\.docker\/config\.json or DOCKER_CONFIG/ })
})

t.test('a config that cannot be read: each start sharing the pull is warned, also one that joins late, and the pull goes on', async (t) => {
  const { docker, pulls } = engine(new Set())
  const dir = configDir(t, 'not json')
  const puller = new ImagePuller(docker, { pullStallMs: 60_000, auth: { configDir: dir } })
  const first: string[] = []
  const late: string[] = []
  const a = puller.ensure('team/m:1', { onWarning: (w) => first.push(w) })
  await until(() => pulls.length === 1)
  const b = puller.ensure('team/m:1', { onWarning: (w) => late.push(w) })
  await until(() => late.length === 1)
  pulls[0]!.finish()
  await Promise.all([a, b])
  t.equal(pulls.length, 1)
  t.match(first, [new RegExp(`^${dir}/config\\.json is not a valid Docker config`)])
  t.same(late, first)
})

t.test('onPulled: once per pull, however many starts share it, with its result and time; none when the image is here', async (t) => {
  const { docker, pulls } = engine(new Set(['team/here:1']))
  let now = 1_000
  // Time stands still but for the test's steps: a sleep ends only when it is called off.
  const clock = {
    now: () => now,
    sleep: (_ms: number, signal?: AbortSignal) => new Promise<void>((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason as Error), { once: true })),
  }
  const told: Array<[boolean, number, number]> = []
  const puller = new ImagePuller(docker, { pullStallMs: 60_000, auth: { configDir: configDir(t, '{}') }, clock, onPulled: (ok, s, bytes) => told.push([ok, s, bytes]) })
  await puller.ensure('team/here:1')
  t.same(told, [], 'here: no pull, nothing told')
  const a = puller.ensure('team/new:1')
  const b = puller.ensure('team/new:1')
  await until(() => pulls.length === 1)
  now += 2_500
  pulls[0]!.finish(undefined, 123_456)
  await Promise.all([a, b])
  t.same(told, [[true, 2.5, 123_456]], 'two starts, one pull told, with the bytes it downloaded')
  const c = puller.ensure('team/bad:1')
  await until(() => pulls.length === 2)
  now += 500
  pulls[1]!.finish('manifest unknown')
  await t.rejects(c)
  t.same(told, [[true, 2.5, 123_456], [false, 0.5, 0]], 'a failed pull is told failed')
})

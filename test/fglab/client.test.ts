import { Readable } from 'node:stream'
import t, { type Test } from 'tap'
import { FILE_CHANGED, FglabClient, FglabError } from '../../src/fglab/client.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { objectId } from '../helpers/ids.js'

/** A fake FGLab and a client of it, both closed when the test ends. */
async function pair(t: Test) {
  const fglab = new FakeFglab()
  await fglab.start()
  const client = new FglabClient({ url: fglab.url })
  t.teardown(async () => {
    await client.close()
    await fglab.close()
  })
  return { fglab, client }
}

t.test('FglabClient', async (t) => {
  t.test('sends basic auth when the URL has credentials', async (t) => {
    const fglab = new FakeFglab({ user: 'lab', pass: 'p@ss:word' })
    await fglab.start()
    t.teardown(() => fglab.close())
    const withAuth = new FglabClient({ url: fglab.url.replace('http://', `http://lab:${encodeURIComponent('p@ss:word')}@`) })
    const without = new FglabClient({ url: fglab.url })
    t.teardown(async () => {
      await withAuth.close()
      await without.close()
    })
    t.equal(withAuth.baseUrl, fglab.url, 'credentials are not part of the base URL')
    const id = objectId()
    t.strictSame(await withAuth.experimentStarted(id), { msg: 'error' }, 'FGLab\'s answer to every update that worked (docs/PROTOCOL.md)')
    t.equal(fglab.calls[0]?.auth, 'Basic ' + Buffer.from('lab:p@ss:word').toString('base64'))
    const err = await without.experimentStarted(id).catch((e: unknown) => e)
    t.type(err, FglabError)
    t.equal((err as FglabError).status, 401)
    t.equal((err as FglabError).retryable, true, 'wrong credentials are the operator\'s to fix: retried, not dropped')
    t.equal(fglab.experiment(id).started, 1)
  })

  t.test('errors say whether to retry', async (t) => {
    const fglab = new FakeFglab()
    await fglab.start()
    const client = new FglabClient({ url: fglab.url + '/' })
    t.teardown(() => client.close())
    t.equal(client.baseUrl, fglab.url, 'a trailing slash is dropped')
    for (const [status, retryable] of [
      [503, true],
      [500, true],
      [429, true],
      [408, true],
      [401, true],
      [403, true],
      [404, false],
      [400, false],
      [413, false],
    ] as const) {
      fglab.failWith(status)
      const err = (await client.experimentFinished(objectId()).catch((e: unknown) => e)) as FglabError
      t.equal(err.status, status)
      t.equal(err.retryable, retryable, `${status}: retryable ${retryable}`)
    }
    await fglab.close()
    const err = (await client.experimentFinished(objectId()).catch((e: unknown) => e)) as FglabError
    t.type(err, FglabError)
    t.equal(err.status, undefined, 'FGLab unreachable')
    t.equal(err.retryable, true)
  })

  t.test('registers and sends projects', async (t) => {
    const { fglab, client } = await pair(t)
    const specs = { address: 'http://box:5081', hostname: 'box', os: { type: 'Linux', platform: 'linux', arch: 'x64', release: '6' }, cpus: ['cpu'], mem: '1GB', gpus: [] }
    const doc = await client.registerMachine(specs)
    t.match(doc._id, /^[0-9a-f]{24}$/)
    t.same(fglab.machines.get(doc._id), { ...specs, _id: doc._id })
    await client.updateProjects(doc._id, { p1: { capacity: 1 } })
    t.strictSame(fglab.projects.get(doc._id), { p1: { capacity: 1 } })
  })
})

t.test('experimentExists: the document, or FGLab\'s empty answer for one deleted', async (t) => {
  const { fglab, client } = await pair(t)
  const id = objectId()
  fglab.experiment(id).fields.big = 'x'.repeat(1 << 20)
  t.equal(await client.experimentExists(id), true)
  fglab.deleteExperiment(id)
  t.equal(await client.experimentExists(id), false)
  fglab.failWith(500)
  const err = (await client.experimentExists(id).catch((e: unknown) => e)) as FglabError
  t.equal(err.status, 500, 'an error is not an answer either way')
})

t.test('a streamed body that fails (a file cut while it is sent) is a passing error, retried', async (t) => {
  const { client } = await pair(t)
  const stream = Readable.from(
    (async function* () {
      yield Buffer.from('--b\r\n')
      throw Object.assign(new Error('notes.txt changed while it was sent (3 of 9 bytes)'), { code: FILE_CHANGED })
    })(),
  )
  const err = (await client.uploadFiles(objectId(), { body: stream, length: 100, contentType: 'multipart/form-data; boundary=b' }).catch((e: unknown) => e)) as FglabError
  t.type(err, FglabError)
  t.equal(err.retryable, true)
  t.match(err.message, /changed while it was sent/)
})

t.test('onRequest: every call timed by name, with its error (registration calls too); a file that changed is not FGLab\'s', async (t) => {
  const fglab = new FakeFglab()
  await fglab.start()
  const told: Array<{ call: string; seconds: number; status?: number; err: boolean }> = []
  const client = new FglabClient({ url: fglab.url, onRequest: (call, seconds, err) => told.push({ call, seconds, status: err?.status, err: err !== undefined }) })
  t.teardown(async () => {
    await client.close()
    await fglab.close()
  })
  const id = objectId()
  await client.experimentStarted(id)
  fglab.refuse = (c) => (c.path === '/api/v1/machines' ? 503 : undefined)
  await t.rejects(client.registerMachine({ address: 'http://x:1', hostname: 'x', os: { type: '', platform: '', arch: '', release: '' }, cpus: [], mem: '', gpus: [] }))
  const stream = Readable.from(
    (async function* () {
      yield Buffer.from('--b\r\n')
      throw Object.assign(new Error('changed'), { code: FILE_CHANGED })
    })(),
  )
  await t.rejects(client.uploadFiles(id, { body: stream, length: 100, contentType: 'multipart/form-data; boundary=b' }))
  await fglab.close()
  await t.rejects(client.experimentFinished(id))
  t.same(told.map(({ call, status, err }) => ({ call, status, err })), [
    { call: 'started', status: undefined, err: false },
    { call: 'register', status: 503, err: true },
    { call: 'finished', status: undefined, err: true },
  ])
  t.ok(told.every((x) => x.seconds >= 0 && x.seconds < 30))
})

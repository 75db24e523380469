import { createServer, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { startHarness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'

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
    t.match((e.fields.FGMachine as Record<string, unknown>).error, /the pull made no progress for 2 s; cancelled/)
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
  t.match(e.fields.FGMachine, { killed: true, error: 'killed before it started' })
  t.equal(e.started, 0, 'never reported started')
  const { execFileSync } = await import('node:child_process')
  t.equal(execFileSync('docker', ['ps', '-aq', '--filter', `label=fgmachine.experiment=${id}`], { encoding: 'utf8' }).trim(), '', 'no container')
  await h.machine.experiments.idle()
  t.equal((await h.capacity('hung')).body.capacity, 2, 'its capacity is released')
})

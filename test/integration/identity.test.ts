import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { spawnMachine } from '../helpers/child-machine.js'
import { FakeFglab } from '../helpers/fake-fglab.js'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'
import { freePort } from '../helpers/ports.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()

t.test('a second FGMachine on the same data folder exits at once, naming the folder and the one that holds it; after a crash the folder is free', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-identity-'))
  const fglab = new FakeFglab()
  await fglab.start()
  t.teardown(async () => {
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const projectsPath = path.join(dir, 'projects.json')
  writeFileSync(projectsPath, JSON.stringify({ p: { image, command: 'true', capacity: 1, results: path.join(dir, 'results') } }))
  const dataDir = path.join(dir, 'data')
  const first = await spawnMachine({ fglabUrl: fglab.url, port: await freePort(), dataDir, projectsPath })
  t.teardown(() => first.crash())

  const started = Date.now()
  const second = await spawnMachine({ fglabUrl: fglab.url, port: await freePort(), dataDir, projectsPath, noWait: true })
  const code = await new Promise<number | null>((resolve) => second.child.once('exit', (c) => resolve(c)))
  t.equal(code, 75, 'exits non-zero (EX_TEMPFAIL)')
  t.ok(Date.now() - started < 15_000, `within seconds (${Date.now() - started} ms)`)
  const said = second.lines.find((l) => l.level === 60)
  t.match(String(said?.msg), `the data folder ${dataDir} is in use by another FGMachine (process ${first.child.pid} on ${os.hostname()}`)
  t.equal(fglab.machines.size, 1, 'the second never registered')
  t.ok((await fetch(`${first.url}/health`)).ok, 'the first runs on, untouched')

  // kill -9 leaves the lock behind: the next start takes it over at once (its pid is gone).
  await first.crash()
  const again = await spawnMachine({ fglabUrl: fglab.url, port: await freePort(), dataDir, projectsPath })
  t.teardown(() => again.crash())
  t.ok(again.lines.some((l) => l.msg === 'data folder locked for this FGMachine'))
})

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'
import { builtMachine } from './built-machine.js'
import { spawnMachine, type ChildMachine } from './child-machine.js'
import { FakeFglab } from './fake-fglab.js'
import { ensureBusyboxImage, removeContainersLabelled } from './images.js'
import { freePort } from './ports.js'

/** What FGMachine may use, at its peak, whatever the experiments produce (the bound; 150 MB is the goal). */
export const MAX_RSS_MB = 200

let built: ReturnType<typeof builtMachine> | undefined

/** FGMachine as users run it (the build, `npm start`'s flags, LOG_LEVEL=info) with one project running `script`. */
export async function memoryMachine(t: Test, script: string, project: Record<string, unknown> = {}) {
  const image = ensureBusyboxImage()
  built ??= builtMachine()
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-memory-'))
  const fglab = new FakeFglab()
  await fglab.start()
  const results = path.join(dir, 'results')
  const projectsPath = path.join(dir, 'projects.json')
  writeFileSync(projectsPath, JSON.stringify({ p: { image, command: 'sh', args: ['-c', script], capacity: 1, results, ...project } }))
  const m = await spawnMachine({ fglabUrl: fglab.url, port: await freePort(), dataDir: path.join(dir, 'data'), projectsPath, built, env: { LOG_LEVEL: 'info' } })
  t.teardown(async () => {
    await m.crash()
    for (const id of fglab.machines.keys()) removeContainersLabelled(`fgmachine.machine=${id}`)
    await fglab.close()
    rmSync(dir, { recursive: true, force: true })
  })
  await fglab.waitFor(() => fglab.projects.size === 1, 20_000, 'registration')
  const submit = async (id: string) => {
    const res = await fetch(`${m.url}/projects/p`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ _id: id }) })
    t.equal(res.status, 200, 'accepted')
  }
  return { dir, fglab, m, results, submit }
}

/** Sample the machine's resident memory every 100 ms until stopped; the peak is also read from VmHWM. */
export function sampleRss(m: ChildMachine) {
  const samples: number[] = []
  const timer = setInterval(() => samples.push(m.rssMb().now), 100)
  return {
    stop() {
      clearInterval(timer)
      return { max: Math.max(...samples), peak: m.rssMb().peak }
    },
  }
}

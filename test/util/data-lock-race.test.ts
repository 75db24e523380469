// The data lock under a loaded machine: every file-system call it makes is
// delayed by a random few milliseconds (a process descheduled between two
// calls), and chosen calls fail as on a read-only or foreign folder. The calls
// are replaced in node:fs/promises for this test process only (tap runs each
// file in its own), before the lock's module is loaded.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire, syncBuiltinESMExports } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'

const require = createRequire(import.meta.url)
const fsp = require('node:fs/promises') as Record<string, (...args: unknown[]) => Promise<unknown>>
let jitterMs = 0
/** A call that fails: its name and first argument tested, the error code it fails with. */
let failing: { call: string; path: RegExp; code: string } | undefined
let calls = 0
for (const call of ['open', 'link', 'rename', 'unlink', 'stat', 'readFile', 'readdir', 'utimes']) {
  const real = fsp[call]!
  fsp[call] = async (...args: unknown[]) => {
    calls++
    if (jitterMs) await new Promise((r) => setTimeout(r, Math.random() * jitterMs))
    if (failing?.call === call && failing.path.test(String(args[0]))) {
      throw Object.assign(new Error(`${failing.code}: ${call} '${String(args[0])}'`), { code: failing.code })
    }
    return real(...args)
  }
}
syncBuiltinESMExports()
const { currentHolder, DataLock, DataLockError, takeoverGuard, unwritable } = await import('../../src/util/data-lock.js')

const fast = { heartbeatMs: 100, staleMs: 800 }
const deadPid = (): number => Number(spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim())

function stale(): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-lock-race-'))
  const file = path.join(dir, 'fgmachine.lock')
  writeFileSync(file, JSON.stringify({ ...currentHolder(), pid: deadPid() }))
  return { dir, file }
}

for (const withGuard of [false, true]) {
  t.test(`six takers of a stale lock${withGuard ? ' and a guard left by a taker that died' : ''}, each call delayed 0–5 ms: one holder, every time`, async (t) => {
    // Before the fix each case went wrong in about one round in twenty-five.
    const rounds = 150
    jitterMs = 5
    t.teardown(() => (jitterMs = 0))
    let wrong = 0
    let litter = 0
    for (let round = 0; round < rounds; round++) {
      const { dir, file } = stale()
      if (withGuard) writeFileSync(await takeoverGuard(file), JSON.stringify({ ...currentHolder(), pid: deadPid() }))
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => DataLock.acquire(dir, fast)))
      const won = results.filter((r) => r.status === 'fulfilled')
      if (won.length !== 1) wrong++
      const refusals = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as Error)
      if (refusals.some((e) => !(e instanceof DataLockError))) t.fail(`round ${round}: ${refusals.find((e) => !(e instanceof DataLockError))!.message}`)
      for (const w of won) await w.value.release()
      if (readdirSync(dir).length) litter++
      rmSync(dir, { recursive: true, force: true })
    }
    t.equal(wrong, 0, `rounds with other than one holder, of ${rounds}`)
    t.equal(litter, 0, `rounds that left a file behind, of ${rounds}`)
  })
}

t.test('a folder that takes no writes ends the takeover with its error (the caller starts unlocked), never a loop', async (t) => {
  for (const [what, fail] of [
    ['read-only: no guard can be made', { call: 'open', path: /\.takeover-/, code: 'EROFS' }],
    ["another user's lock in a sticky folder: it cannot be removed", { call: 'unlink', path: /fgmachine\.lock$/, code: 'EPERM' }],
  ] as const) {
    const { dir, file } = stale()
    writeFileSync(await takeoverGuard(file), JSON.stringify({ ...currentHolder(), pid: deadPid() }))
    failing = fail
    calls = 0
    const err = await DataLock.acquire(dir, fast).catch((e: unknown) => e)
    failing = undefined
    t.equal((err as NodeJS.ErrnoException).code, fail.code, what)
    t.ok(unwritable(err), `${what}: taken for a folder that takes no writes`)
    t.ok(calls < 50, `${what}: ended after ${calls} file-system calls`)
    rmSync(dir, { recursive: true, force: true })
  }
})

import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { currentHolder, DataLock, DataLockError, takeoverGuard } from '../../src/util/data-lock.js'

function folder(t: Test): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-lock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return { dir, file: path.join(dir, 'fgmachine.lock') }
}

/** A pid no process has now: one that just ended. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' })
  return Number(r.stdout.trim())
}

const fast = { heartbeatMs: 100, staleMs: 800 }

t.test('taken, held, released: the lock names its holder', async (t) => {
  const { dir, file } = folder(t)
  const lock = await DataLock.acquire(dir, fast)
  const held = JSON.parse(readFileSync(file, 'utf8'))
  t.match(held, { pid: process.pid, host: os.hostname(), instance: lock.holder.instance })
  await lock.release()
  t.notOk(existsSync(file), 'removed at release')
})

t.test('a second taker while the first runs is refused at once, naming the folder and the holder', async (t) => {
  const { dir } = folder(t)
  const first = await DataLock.acquire(dir, fast)
  t.teardown(() => first.release())
  const started = Date.now()
  // Judged by its heartbeat, the refusal would come only after a minute without a touch.
  await t.rejects(DataLock.acquire(dir, { ...fast, staleMs: 60_000 }), new DataLockError(`the data folder ${dir} is in use by another FGMachine (process ${process.pid} on ${os.hostname()}, since ${first.holder.since}): only one may run on a data folder. Stop that one first, or give this one a data folder of its own (FGMACHINE_DATA_DIR)`))
  t.ok(Date.now() - started < 30_000, 'a holder of this pid namespace is checked by its pid: no waiting for its heartbeat')
})

t.test('a lock left by a process that is gone is taken over at once: a dead pid, or a pid reused by another process', async (t) => {
  for (const [what, holder] of [
    ['dead pid', { ...currentHolder(), pid: deadPid() }],
    ['reused pid (another start time)', { ...currentHolder(), procStart: '1' }],
    ['a file cut off by a crash, old', undefined],
  ] as const) {
    const { dir, file } = folder(t)
    writeFileSync(file, holder ? JSON.stringify(holder) : '{"pid": 12')
    if (!holder) utimesSync(file, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000))
    const lock = await DataLock.acquire(dir, fast)
    t.equal(JSON.parse(readFileSync(file, 'utf8')).instance, lock.holder.instance, what)
    await lock.release()
  }
})

t.test('a holder in another container (pid namespace) is judged by its heartbeat', async (t) => {
  const { dir, file } = folder(t)
  const other = { ...currentHolder(), pid: 1, pidNs: 'pid:[1]', host: 'c0ffee' }
  writeFileSync(file, JSON.stringify(other))
  const beat = setInterval(() => utimesSync(file, new Date(), new Date()), 100)
  t.teardown(() => clearInterval(beat))
  await t.rejects(DataLock.acquire(dir, fast), { message: /in use by another FGMachine \(process 1 on c0ffee.*which is still running: its lock was touched while this one waited/ }, 'beating: refused')
  clearInterval(beat)
  utimesSync(file, new Date(Date.now() - 5000), new Date(Date.now() - 5000))
  const lock = await DataLock.acquire(dir, fast)
  t.equal(JSON.parse(readFileSync(file, 'utf8')).instance, lock.holder.instance, 'silent for longer than staleMs: taken over')
  await lock.release()
})

t.test('several takers of one stale lock: exactly one gets it, every time', async (t) => {
  // The race is narrow (a taker that checked the stale lock removing the one another had just made):
  // it shows in about one round in thirty, so many rounds are run.
  const rounds = 200
  let wrong = 0
  for (let round = 0; round < rounds; round++) {
    const { dir, file } = folder(t)
    writeFileSync(file, JSON.stringify({ ...currentHolder(), pid: deadPid() }))
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => DataLock.acquire(dir, fast)))
    const won = results.filter((r) => r.status === 'fulfilled')
    if (won.length !== 1) wrong++
    t.ok(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof DataLockError), 'the others are refused, as with a live holder')
    for (const w of won) await w.value.release()
    t.same(readdirSync(dir), [], 'no guard left behind')
  }
  t.equal(wrong, 0, `rounds with other than one holder, of ${rounds}`)
})

t.test('a takeover guard left by a crash is passed over: at once when its process is gone, else once it has stayed staleMs', async (t) => {
  for (const [what, guardHolder, atLeastMs] of [
    ['its process gone', { ...currentHolder(), pid: deadPid() }, 0],
    ['in another container', { ...currentHolder(), pid: 1, pidNs: 'pid:[1]' }, fast.staleMs],
  ] as const) {
    const { dir, file } = folder(t)
    writeFileSync(file, JSON.stringify({ ...currentHolder(), pid: deadPid() }))
    writeFileSync(await takeoverGuard(file), JSON.stringify(guardHolder))
    const started = Date.now()
    const lock = await DataLock.acquire(dir, fast)
    t.equal(JSON.parse(readFileSync(file, 'utf8')).instance, lock.holder.instance, what)
    t.ok(Date.now() - started >= atLeastMs, `${what}: not before ${atLeastMs} ms`)
    t.same(readdirSync(dir), ['fgmachine.lock'], `${what}: its guard is removed with the lock it guarded`)
    await lock.release()
  }
})

t.test('guards left by takers that died at a lock removed since are swept once the lock is held', async (t) => {
  const { dir, file } = folder(t)
  writeFileSync(file, JSON.stringify({ ...currentHolder(), pid: deadPid() }))
  const litter = await takeoverGuard(file)
  writeFileSync(litter, JSON.stringify({ ...currentHolder(), pid: deadPid() }))
  const live = await takeoverGuard(file, 1)
  writeFileSync(live, JSON.stringify({ ...currentHolder(), pid: 1, pidNs: 'pid:[1]' }))
  rmSync(file)
  const lock = await DataLock.acquire(dir, fast)
  t.teardown(() => lock.release())
  t.notOk(existsSync(litter), "a dead taker's guard is removed")
  t.ok(existsSync(live), 'a guard of a taker that may still run (another container) is left alone')
})

t.test('a takeover guard held by a live taker is waited for, then the lock judged again', async (t) => {
  const { dir, file } = folder(t)
  writeFileSync(file, JSON.stringify({ ...currentHolder(), pid: deadPid() }))
  const guard = await takeoverGuard(file)
  writeFileSync(guard, JSON.stringify(currentHolder()))
  // The other taker finishes its takeover: the stale lock removed, its own made, its guard removed.
  const other = { ...currentHolder(), host: 'the-other-taker' }
  const finish = setTimeout(() => {
    rmSync(file)
    writeFileSync(file, JSON.stringify(other))
    rmSync(guard)
  }, 150)
  t.teardown(() => clearTimeout(finish))
  await t.rejects(DataLock.acquire(dir, fast), { message: /in use by another FGMachine \(process \d+ on the-other-taker/ }, "refused: the lock is the live taker's now")
  t.equal(JSON.parse(readFileSync(file, 'utf8')).instance, other.instance, "the other taker's lock is left alone")
})

t.test('a holder on a host whose clock is behind is judged by its heartbeat, not by how old its lock looks', async (t) => {
  const { dir, file } = folder(t)
  const behind = (): Date => new Date(Date.now() - 70_000)
  writeFileSync(file, JSON.stringify({ ...currentHolder(), pid: 1, pidNs: 'pid:[1]', host: 'slow-clock' }))
  utimesSync(file, behind(), behind())
  const beat = setInterval(() => utimesSync(file, behind(), behind()), fast.heartbeatMs)
  t.teardown(() => clearInterval(beat))
  await t.rejects(DataLock.acquire(dir, fast), { message: /process 1 on slow-clock.*still running/ })
})

t.test('where pid namespaces and boots cannot be told apart (outside Linux), a holder on another host is judged by its heartbeat', async (t) => {
  const { dir, file } = folder(t)
  const mac = { bootId: '', pidNs: '', procStart: '' }
  writeFileSync(file, JSON.stringify({ ...currentHolder(), ...mac, pid: deadPid(), host: 'mac-a' }))
  const beat = setInterval(() => utimesSync(file, new Date(), new Date()), fast.heartbeatMs)
  t.teardown(() => clearInterval(beat))
  await t.rejects(DataLock.acquire(dir, { ...fast, self: { ...mac, host: 'mac-b' } }), { message: /on mac-a.*still running/ }, 'its pid means nothing here')
  clearInterval(beat)
  writeFileSync(file, JSON.stringify({ ...currentHolder(), ...mac, pid: deadPid(), host: 'mac-b' }))
  const lock = await DataLock.acquire(dir, { ...fast, self: { ...mac, host: 'mac-b' } })
  t.equal(JSON.parse(readFileSync(file, 'utf8')).instance, lock.holder.instance, 'of this host: a dead pid is taken over at once')
  await lock.release()
})

t.test('a holder whose lock was taken from it is told, and stops touching it', async (t) => {
  const { dir, file } = folder(t)
  let lostTo: unknown
  const lock = await DataLock.acquire(dir, { ...fast, onLost: (by) => (lostTo = by) })
  writeFileSync(file, JSON.stringify({ ...currentHolder(), host: 'other-box' }))
  const deadline = Date.now() + 5000
  while (!lostTo && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  t.match(lostTo, { host: 'other-box' })
  await lock.release()
  t.ok(existsSync(file), "release leaves the new holder's lock alone")
})

t.test('where a start time cannot be read (outside Linux, /proc hidden), a running pid is taken as the holder', async (t) => {
  const { dir, file } = folder(t)
  writeFileSync(file, JSON.stringify({ ...currentHolder(), procStart: '' }))
  await t.rejects(DataLock.acquire(dir, fast), DataLockError, 'not taken over from a live process')
})

t.test('a lock file that cannot be read for a moment, or is removed, is not taken for lost: it is made again', async (t) => {
  const { dir, file } = folder(t)
  let lost = false
  const lock = await DataLock.acquire(dir, { ...fast, onLost: () => (lost = true) })
  t.teardown(() => lock.release())
  writeFileSync(file, '{"cut": ')
  await new Promise((r) => setTimeout(r, 300))
  rmSync(file)
  const deadline = Date.now() + 5000
  // Made, then written: read until it is whole (or the deadline passes).
  const instance = (): unknown => {
    try {
      return JSON.parse(readFileSync(file, 'utf8')).instance
    } catch {
      return undefined
    }
  }
  while (instance() === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  t.equal(instance(), lock.holder.instance, 'made again by its holder')
  t.equal(lost, false, 'never told it was lost')
})

import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { DISK_PROBE_EVERY_MS, DiskHealth, nodeDisk, type Disk } from '../../src/util/disk.js'
import { until } from '../helpers/until.js'

/** The real disk, except that while `failing` is set every write fails with that code. */
function faultyDisk() {
  const state: { failing?: string; writes: number } = { writes: 0 }
  const fail = (what: string) => Promise.reject(Object.assign(new Error(`${state.failing}: ${what}`), { code: state.failing }))
  const disk: Disk = {
    writeAtomic: (f, d) => (state.writes++, state.failing ? fail(`write ${f}`) : nodeDisk.writeAtomic(f, d)),
    append: (f, d, s) => (state.writes++, state.failing ? fail(`append ${f}`) : nodeDisk.append(f, d, s)),
    remove: (f) => nodeDisk.remove(f),
    rename: (a, b) => (state.failing ? fail(`rename ${a}`) : nodeDisk.rename(a, b)),
    read: (f) => nodeDisk.read(f),
    list: (d) => nodeDisk.list(d),
  }
  return { disk, state }
}

function rig(t: Test, probeEveryMs = 20) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-health-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { disk, state } = faultyDisk()
  const said: Array<{ level: string; msg: string }> = []
  const log = { warn: (_o: object, msg: string) => said.push({ level: 'warn', msg }), info: (_o: object, msg: string) => said.push({ level: 'info', msg }) }
  const health = new DiskHealth(disk, { dir, probeEveryMs, log })
  t.teardown(() => health.close())
  return { dir, health, state, said }
}

t.test('a write refused for want of space, or of permission, is a refusal with its cause; other failures are not', async (t) => {
  for (const [code, cause] of [
    ['ENOSPC', 'disk_full'],
    ['EDQUOT', 'disk_full'],
    ['EROFS', 'data_unwritable'],
    ['EACCES', 'data_unwritable'],
    ['EPERM', 'data_unwritable'],
  ] as const) {
    const { dir, health, state } = rig(t, 60_000)
    t.equal(health.refusal(), undefined, `${code}: none before`)
    state.failing = code
    await t.rejects(health.disk.writeAtomic(path.join(dir, 'x.json'), '{}'), { code }, `${code}: the write still fails as it did`)
    t.match(health.refusal(), { cause, reason: new RegExp(`^the data folder ${dir} (is full|cannot be written) \\(${code}: write `) }, code)
  }
  const { dir, health, state } = rig(t)
  state.failing = 'EIO'
  await t.rejects(health.disk.append(path.join(dir, 'x'), 'y', false))
  t.equal(health.refusal(), undefined, 'EIO: not a full or read-only data folder')
})

t.test('while refused, a tiny file is written every few seconds until one is taken; then no refusal, and it is said', async (t) => {
  t.ok(DISK_PROBE_EVERY_MS >= 1000 && DISK_PROBE_EVERY_MS <= 10_000, `the production interval (${DISK_PROBE_EVERY_MS} ms) is a few seconds`)
  const { dir, health, state, said } = rig(t, 20)
  state.failing = 'ENOSPC'
  await t.rejects(health.disk.append(path.join(dir, 'queue.jsonl'), 'x\n', true))
  t.equal(health.refusal()?.cause, 'disk_full')
  const before = state.writes
  await until(() => state.writes >= before + 3, 'three probes')
  t.equal(health.refusal()?.cause, 'disk_full', 'still full: still refused')
  t.match(said, [{ level: 'warn', msg: /^the data folder .* is full .*; no experiment is taken meanwhile$/ }], 'said once, not at each failed probe')

  state.failing = undefined
  await until(() => health.refusal() === undefined, 'the probe to find room')
  t.match(said.at(-1), { level: 'info', msg: 'the data folder takes writes again: experiments are taken again' })
  await until(() => readdirSync(dir).length === 0, 'the probe to remove its file: it leaves nothing behind')
  const after = state.writes
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(state.writes, after, 'no more probes once healthy')
})

t.test('an append that fits does not clear it (a full disk has room in a last block); a whole file written does', async (t) => {
  const { dir, health, state } = rig(t, 60_000)
  state.failing = 'ENOSPC'
  await t.rejects(health.disk.writeAtomic(path.join(dir, 'r.json'), '{}'))
  state.failing = undefined
  await health.disk.append(path.join(dir, 'q.jsonl'), 'x\n', false)
  t.equal(health.refusal()?.cause, 'disk_full')
  await health.disk.writeAtomic(path.join(dir, 'r.json'), '{}')
  t.equal(health.refusal(), undefined)
})

t.test('probe(): now, on demand (as at start); true and nothing left when the folder takes writes', async (t) => {
  const { dir, health, state } = rig(t, 60_000)
  const sub = path.join(dir, 'not-yet')
  const h = new DiskHealth(nodeDisk, { dir: sub })
  t.teardown(() => h.close())
  t.equal(await h.probe(), true)
  t.ok(existsSync(sub), 'the data folder is made')
  t.same(readdirSync(sub), [])
  state.failing = 'EROFS'
  t.equal(await health.probe(), false)
  t.equal(health.refusal()?.cause, 'data_unwritable')
})

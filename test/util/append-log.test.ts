import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import t from 'tap'
import { AppendLog } from '../../src/util/append-log.js'
import { nodeDisk, type Disk } from '../../src/util/disk.js'

t.test('appends made while a write is under way go out together, in order', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-log-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const writes: Array<{ lines: number; sync: boolean }> = []
  const disk: Disk = { ...nodeDisk, append: (f, d, s) => (writes.push({ lines: d.split('\n').length - 1, sync: s }), nodeDisk.append(f, d, s)) }
  const log = new AppendLog(disk, path.join(dir, 'sub', 'x.jsonl'))
  const done = Array.from({ length: 1000 }, (_, i) => log.append({ i }, i === 500))
  await Promise.all(done)
  t.ok(writes.length <= 3, `1000 records in ${writes.length} writes`)
  t.equal(writes.reduce((n, w) => n + w.lines, 0), 1000)
  t.ok(writes.some((w) => w.sync), 'the batch with a record that asked for it is flushed')
  const { records, bad } = await AppendLog.read(nodeDisk, log.file)
  t.same(records.map((r) => (r as { i: number }).i), Array.from({ length: 1000 }, (_, i) => i))
  t.equal(bad, 0)
  await log.rewrite([{ i: 7 }])
  t.equal(readFileSync(log.file, 'utf8'), '{"i":7}\n')
  await log.remove()
  t.same(await AppendLog.read(nodeDisk, log.file), { records: [], bad: 0 }, 'removed: nothing to read')
})

t.test('a line cut off by a crash is counted and skipped', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-log-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(path.join(dir, 'x.jsonl'), '{"a":1}\n{"a":2}\n{"a":')
  t.same(await AppendLog.read(nodeDisk, path.join(dir, 'x.jsonl')), { records: [{ a: 1 }, { a: 2 }], bad: 1 })
})

t.test('a failed write fails its appends, and the log goes on', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-log-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let fail = true
  const disk: Disk = { ...nodeDisk, append: (f, d, s) => (fail ? Promise.reject(new Error('ENOSPC')) : nodeDisk.append(f, d, s)) }
  const log = new AppendLog(disk, path.join(dir, 'x.jsonl'))
  await t.rejects(log.append({ a: 1 }), /ENOSPC/)
  fail = false
  await log.append({ a: 2 })
  t.same((await AppendLog.read(nodeDisk, log.file)).records, [{ a: 2 }])
})

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import t from 'tap'
import { nodeDisk } from '../../src/util/disk.js'

t.test('writeAtomic writes, replaces whole, makes its folder, and leaves no temporary file', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-disk-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'a', 'b.json')
  await nodeDisk.writeAtomic(file, '{"a":1}')
  t.equal(readFileSync(file, 'utf8'), '{"a":1}')
  await nodeDisk.writeAtomic(file, '{"b":2}')
  t.equal(readFileSync(file, 'utf8'), '{"b":2}')
  t.same(readdirSync(path.dirname(file)), ['b.json'])
})

t.test('append, read, list, remove; missing files are no error', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-disk-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'new', 'x.log')
  await nodeDisk.append(file, 'one\n', false)
  await nodeDisk.append(file, 'two\n', true)
  t.equal(await nodeDisk.read(file), 'one\ntwo\n')
  t.same(await nodeDisk.list(path.dirname(file)), ['x.log'])
  await nodeDisk.remove(file)
  t.notOk(existsSync(file))
  t.equal(await nodeDisk.read(file), undefined)
  t.same(await nodeDisk.list(path.join(dir, 'none')), [])
  await t.resolves(nodeDisk.remove(file))
})

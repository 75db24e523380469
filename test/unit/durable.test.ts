import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import t from 'tap'
import { writeFileDurably } from '../../src/util/durable.js'

t.test('writeFileDurably writes, replaces whole, and leaves no temporary file', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-durable-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'state.json')
  writeFileDurably(file, '{"a":1}')
  t.equal(readFileSync(file, 'utf8'), '{"a":1}')
  writeFileDurably(file, '{"b":2}')
  t.equal(readFileSync(file, 'utf8'), '{"b":2}', 'replaced')
  t.strictSame(readdirSync(dir), ['state.json'], 'nothing else left')
  t.throws(() => writeFileDurably(path.join(dir, 'missing', 'x.json'), '{}'), { code: 'ENOENT' }, 'a missing folder is an error, not a silent loss')
})

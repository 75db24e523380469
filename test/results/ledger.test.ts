import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { Ledgers } from '../../src/results/ledger.js'
import { nodeDisk, type Disk } from '../../src/util/disk.js'
import { objectId } from '../helpers/ids.js'

function rig(t: Test, disk: Disk = nodeDisk) {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-ledger-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return { dir, open: () => new Ledgers(disk, dir, pino({ level: 'silent' })) }
}

t.test('what was sent, given up or noted is read back after a restart', async (t) => {
  const syncs: boolean[] = []
  const r = rig(t, { ...nodeDisk, append: (f, d, s) => (syncs.push(s), nodeDisk.append(f, d, s)) })
  const id = objectId()
  const first = await r.open().open(id)
  await first.record('started', { sent: true })
  await first.record('file:a.txt', { sent: true, sig: '3:1000:42' })
  await first.record('file:model.ckpt', { sent: false, reason: 'too big' })
  await first.record('file:scores.json', { sent: true, sig: '9:1:1', note: 'uploaded as a file' })
  t.same(syncs, [false, false, true, false], 'only a given-up outcome is flushed to the disk before it counts')
  const l = await r.open().open(id)
  t.equal(l.has('started'), true)
  t.equal(l.has('finished'), false)
  t.equal(l.sentSignature('a.txt'), '3:1000:42')
  t.equal(l.sentSignature('model.ckpt'), undefined)
  t.equal(l.keepFolder(), 'model.ckpt was not sent: too big')
  t.equal(l.problems(), 'model.ckpt: not sent: too big | scores.json: uploaded as a file')
  await l.record('file:model.ckpt', { sent: true, sig: '1:2:3' })
  t.equal(l.keepFolder(), undefined, 'sent later (rewritten smaller): the folder may go')
  t.equal(l.problems(), 'scores.json: uploaded as a file')
})

t.test('an experiment gone from FGLab keeps its folder, after a restart too', async (t) => {
  const r = rig(t)
  const id = objectId()
  await (await r.open().open(id)).markDeleted('the experiment was deleted in FGLab')
  const l = await r.open().open(id)
  t.equal(l.deleted, 'the experiment was deleted in FGLab')
  t.equal(l.keepFolder(), 'the experiment was deleted in FGLab')
})

t.test('the page lists ten problems and counts the rest', async (t) => {
  const r = rig(t)
  const l = await r.open().open(objectId())
  for (let i = 0; i < 25; i++) await l.record(`file:f${i}.bin`, { sent: false, reason: 'too big' })
  const text = l.problems()!
  t.equal(text.split(' | ').length, 11)
  t.match(text, /\| and 15 more \(see FGMachine's log\)$/)
})

t.test('remove: gone from the disk; onDisk lists what is there', async (t) => {
  const r = rig(t)
  const ledgers = r.open()
  const [a, b] = [objectId(), objectId()]
  await (await ledgers.open(a)).record('started', { sent: true })
  await (await ledgers.open(b)).record('started', { sent: true })
  t.same((await ledgers.onDisk()).sort(), [a, b].sort())
  await ledgers.remove(a)
  t.same(await ledgers.onDisk(), [b])
  t.equal((await ledgers.open(a)).has('started'), false, 'a removed ledger opens empty')
})

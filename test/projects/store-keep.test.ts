import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { ProjectStore, RELOAD_DEBOUNCE_MS } from '../../src/projects/store.js'
import { LogSink } from '../helpers/harness.js'
import { until } from '../helpers/until.js'

const P1 = '5f1e2d3c4b5a69788796a5b1'
const P2 = '5f1e2d3c4b5a69788796a5b2'
const P3 = '5f1e2d3c4b5a69788796a5b3'
const local = { command: 'python', args: ['train.py'], options: 'double-dash', capacity: 0.5, results: 'results' }
const KEEPING = /^projects\.json (is empty|is gone \(removed, or being replaced\)); keeping the last good configuration until it is written again \(to run no projects, write \{\} to it\)$/

/** A store over a projects.json of the test's own, loaded with P1; what it announced, and its log. */
async function loaded(t: Test, debounceMs = RELOAD_DEBOUNCE_MS) {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-keep-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'projects.json')
  writeFileSync(file, JSON.stringify({ [P1]: local }))
  const logs = new LogSink()
  const store = new ProjectStore(file, pino({ level: 'debug' }, logs), dir, undefined, debounceMs)
  t.teardown(() => store.close())
  t.equal(await store.reload(), true)
  const changes: string[][] = []
  store.on('change', (raw) => changes.push(Object.keys(raw)))
  const kept = () => logs.lines.filter((l) => KEEPING.test(String(l.msg)))
  return { file, store, logs, changes, kept }
}

t.test('an emptied projects.json keeps the last good configuration, says so once, and {} means no projects', async (t) => {
  const { file, store, changes, kept } = await loaded(t)
  for (const empty of ['', '  \n']) {
    writeFileSync(file, empty)
    t.equal(await store.reload(), false, `${JSON.stringify(empty)}: not used`)
    t.ok(store.get(P1), 'the last good project is still there')
    t.same(Object.keys(store.raw()), [P1], 'and FGLab would still be told of it')
  }
  t.same(changes, [], 'no change is announced')
  t.equal(kept().length, 1, 'said once')
  t.equal(kept()[0]?.level, 40, 'as a warning')
  t.match(kept()[0], { msg: /^projects\.json is empty;/, file, projects: [P1] })

  writeFileSync(file, '{}')
  t.equal(await store.reload(), true)
  t.equal(store.all().length, 0, '{} is "no projects"')
  t.same(changes, [[]])
})

t.test('a removed projects.json keeps the last good configuration; written again, it is applied', async (t) => {
  const { file, store, changes, kept } = await loaded(t)
  unlinkSync(file)
  t.equal(await store.reload(), false)
  t.ok(store.get(P1), 'kept')
  t.match(kept(), [{ msg: /^projects\.json is gone/ }])
  t.same(changes, [])
  t.equal(await store.reload({ force: true }), false, "forced (the machine's checks changed)")
  t.ok(store.get(P1), 'the kept configuration is checked again, and kept')
  t.same(changes, [[P1]], 'and announced again, as a forced reload is')

  writeFileSync(file, JSON.stringify({ [P1]: local }))
  t.equal(await store.reload(), true)
  t.same(changes, [[P1]], 'the same text back again: nothing to apply')
  unlinkSync(file)
  await store.reload()
  t.equal(kept().length, 2, 'removed again after it came back: said again')
  writeFileSync(file, JSON.stringify({ [P2]: local }))
  t.equal(await store.reload(), true)
  t.ok(store.get(P2))
  t.notOk(store.get(P1))
})

t.test('the watch: an editor that removes the file, then writes it, has it read once, whole', async (t) => {
  t.ok(RELOAD_DEBOUNCE_MS >= 200 && RELOAD_DEBOUNCE_MS <= 1000, `the production debounce (${RELOAD_DEBOUNCE_MS} ms) outlasts an editor's save and is not felt`)
  // A debounce long enough that a busy test machine cannot stretch the gap below past it.
  const { file, store, changes, kept } = await loaded(t, 1500)
  await store.watch()
  unlinkSync(file)
  // The editor's gap between the two (longer than the 100 ms in which chokidar merges them itself).
  await delay(250)
  await writeFile(file, JSON.stringify({ [P2]: local }))
  await until(() => store.get(P2) !== undefined, 'the new file to be applied')
  // A later save, awaited: anything the first save caused (a reload of nothing, say) came before it.
  await writeFile(file, JSON.stringify({ [P2]: local, [P3]: local }))
  await until(() => store.get(P3) !== undefined, 'the next save')
  t.same(changes, [[P2], [P2, P3]], 'each save applied once, and nothing in between')
  t.same(kept(), [], 'the file was never read while it was gone: no warning')
})

t.test('the watch: a file removed for a while, or emptied, keeps the last good projects until it is written again', async (t) => {
  const { file, store, changes, kept } = await loaded(t)
  await store.watch()
  unlinkSync(file)
  await until(() => kept().length === 1 || changes.length > 0, 'the removal to be seen')
  t.ok(store.get(P1), 'removed: the project is kept')
  writeFileSync(file, '')
  await until(() => kept().length === 2 || changes.length > 0, 'the empty file to be seen')
  t.ok(store.get(P1), 'emptied (`> projects.json`): the project is kept')
  await writeFile(file, JSON.stringify({ [P2]: local }))
  await until(() => store.get(P2) !== undefined, 'the new file to be applied')
  t.same(changes, [[P2]], 'FGLab is told once: the new projects, never none')
})

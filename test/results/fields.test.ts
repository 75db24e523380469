import { calculateObjectSize } from 'bson'
import t from 'tap'
import { measure, parseFields, unstorable } from '../../src/results/fields.js'

t.test('parseFields: a JSON object, without _id and __proto__', async (t) => {
  t.strictSame(parseFields('{"_id": "x", "_scores": {"a": 1}, "__proto__": {"polluted": true}}'), { ok: true, fields: { _scores: { a: 1 } } })
  t.match(parseFields('[1]'), { ok: false, reason: 'not a JSON object' })
  t.match(parseFields('{"a": '), { ok: false, reason: /^not valid JSON/ })
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})

t.test('unstorable: what MongoDB refuses, at any depth', async (t) => {
  t.equal(unstorable({ _scores: { acc: 0.9 }, _charts: [{ columnNames: ['a'], data: { columns: [['a', 1, 2]] } }] }), undefined)
  t.match(unstorable({ _scores: { 'mAP@0.5': 1 } }), /field name "mAP@0\.5" has a "\." in it.*rename it \(e\.g\. "mAP@0_5"\)/)
  t.match(unstorable({ a: [{ b: { 'x.y': 1 } }] }), /"x\.y"/, 'inside arrays too')
  t.match(unstorable({ $set: 1 }), /starts with "\$"/)
  t.match(unstorable({ 'a\u0000b': 1 }), /NUL/)
  let deep: Record<string, unknown> = { leaf: 1 }
  for (let i = 0; i < 120; i++) deep = { d: deep }
  t.match(unstorable(deep), /nested deeper than MongoDB's 100 levels/)
})

t.test('unstorable: its BSON size is what the MongoDB driver counts', async (t) => {
  const docs = [
    { a: 1, b: -2147483648, c: 2147483648, d: 0.5, e: 'héllo', f: true, g: null, h: [1, 'x', { y: [] }] },
    { _charts: { columnNames: ['loss', 'epoch'], data: { columns: [['loss', ...Array.from({ length: 1000 }, (_, i) => i / 7)]] } } },
  ]
  for (const d of docs) t.equal(measure(d).bytes, calculateObjectSize(d), 'the same size as the driver counts')
  // Room is left for the rest of the experiment's document (options, dates, file list).
  const big = { blob: 'x'.repeat(16 * 1024 * 1024 - 300 * 1024) }
  const over = { blob: 'x'.repeat(16 * 1024 * 1024) }
  for (const d of docs) t.equal(unstorable(d), undefined)
  t.equal(unstorable(big), undefined, `${calculateObjectSize(big)} bytes: fits`)
  t.match(unstorable(over), /16\.0 MiB as BSON, more than one FGLab document holds/)
  t.ok(calculateObjectSize(over) > 16 * 1024 * 1024, 'the driver agrees it is over')
})

import t from 'tap'
import { Utf8Chunks } from '../../src/logs/utf8-chunks.js'

t.test('a character split between two reads is carried whole to the next chunk', async (t) => {
  const text = 'a€b𝄞cé\n'
  const bytes = Buffer.from(text)
  // Every way of cutting the bytes in two, and byte by byte.
  for (let cut = 0; cut <= bytes.length; cut++) {
    const c = new Utf8Chunks()
    const out = [c.push(bytes.subarray(0, cut)), c.push(bytes.subarray(cut)), c.end()].filter((b): b is Buffer => b !== undefined)
    t.ok(out.every((b) => !b.toString().includes('\uFFFD')), `cut at ${cut}: each chunk decodes on its own`)
    t.equal(out.map((b) => b.toString()).join(''), text)
  }
  const c = new Utf8Chunks()
  const pieces = [...bytes].map((b) => c.push(Buffer.from([b]))).filter((b): b is Buffer => b !== undefined)
  t.equal(pieces.map((b) => b.toString()).join(''), text, 'byte by byte')
})

t.test('a character cut short at the end is handed over as it is', async (t) => {
  const c = new Utf8Chunks()
  t.equal(c.push(Buffer.from([0x61, 0xe2, 0x82]))?.toString(), 'a')
  t.same(c.end(), Buffer.from([0xe2, 0x82]))
  t.equal(c.end(), undefined)
})

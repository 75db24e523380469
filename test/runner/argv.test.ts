import t from 'tap'
import { buildArgv } from '../../src/runner/argv.js'
import type { OptionStyle } from '../../src/projects/schema.js'

const ID = '5f1e2d3c4b5a69788796a5b4'
const OPTIONS = { seed: 123, model: 'cnn.v2', L2: true, neg: false, _id: ID }
const ARGS = ['first', 'last']

// docs/PROTOCOL.md, "Options → command line": what the original machine gives, word for word.
const TABLE: Array<[OptionStyle, string, string[]]> = [
  ['plain', 'optional', ['first', 'last', 'seed', '123', 'model', 'cnn.v2', 'L2', '_id', ID]],
  ['plain', 'mandatory', ['first', 'last', 'seed', '123', 'model', 'cnn.v2', 'L2', 'true', 'neg', 'false', '_id', ID]],
  ['single-dash', 'optional', ['first', 'last', '-seed', '123', '-model', 'cnn.v2', '-L2', '-_id', ID]],
  ['single-dash', 'mandatory', ['first', 'last', '-seed', '123', '-model', 'cnn.v2', '-L2', 'true', '-neg', 'false', '-_id', ID]],
  ['double-dash', 'optional', ['first', 'last', '--seed=123', '--model=cnn.v2', '--L2', `--_id=${ID}`]],
  ['double-dash', 'mandatory', ['first', 'last', '--seed=123', '--model=cnn.v2', '--L2=true', '--neg=false', `--_id=${ID}`]],
  ['function', 'optional', ['first', `last('seed',123,'model','cnn.v2','L2','_id','${ID}');`]],
  ['function', 'mandatory', ['first', `last('seed',123,'model','cnn.v2','L2',true,'neg',false,'_id','${ID}');`]],
]

t.test('the whole table from docs/PROTOCOL.md', async (t) => {
  for (const [style, boolean, expected] of TABLE) {
    t.strictSame(buildArgv(ARGS, OPTIONS, style, boolean), expected, `${style} × ${boolean}`)
  }
})

t.test('a boolean field that is absent or anything but "optional" passes booleans as values', async (t) => {
  for (const boolean of [undefined, 'mandatory', 'yes', '']) {
    t.strictSame(buildArgv([], { L2: true, neg: false }, 'plain', boolean), ['L2', 'true', 'neg', 'false'], `boolean: ${String(boolean)}`)
  }
})

t.test('a value with spaces or ";" stays one element', async (t) => {
  const value = 'a b; rm -rf / && echo "x"'
  t.strictSame(buildArgv(['run'], { name: value }, 'plain', undefined), ['run', 'name', value])
  t.strictSame(buildArgv(['run'], { name: value }, 'single-dash', undefined), ['run', '-name', value])
  t.strictSame(buildArgv(['run'], { name: value }, 'double-dash', undefined), ['run', `--name=${value}`])
  const fn = buildArgv(['-r', 'train'], { name: 'a b; c' }, 'function', undefined)
  t.equal(fn.length, 2, 'the MATLAB call is one element')
  t.equal(fn[1], "train('name','a b; c');")
})

t.test('MATLAB quoting doubles a single quote and keeps a double quote', async (t) => {
  t.strictSame(buildArgv(['train'], { note: "it's" }, 'function', undefined), ["train('note','it''s');"])
  t.strictSame(buildArgv(['train'], { note: 'say "hi"' }, 'function', undefined), [`train('note','say "hi"');`])
  t.strictSame(buildArgv(['train'], { "o'k": 1 }, 'function', undefined), ["train('o''k',1);"], 'keys are quoted the same way')
})

t.test('key order follows the object, not the alphabet', async (t) => {
  const opts = { zeta: 1, alpha: 2, mid: 3 }
  t.strictSame(buildArgv([], opts, 'plain', undefined), ['zeta', '1', 'alpha', '2', 'mid', '3'])
  t.strictSame(buildArgv([], { mid: 3, zeta: 1, alpha: 2 }, 'double-dash', undefined), ['--mid=3', '--zeta=1', '--alpha=2'])
})

t.test('empty args', async (t) => {
  t.strictSame(buildArgv([], { seed: 1 }, 'plain', undefined), ['seed', '1'])
  t.strictSame(buildArgv([], { seed: 1 }, 'single-dash', undefined), ['-seed', '1'])
  t.strictSame(buildArgv([], { seed: 1 }, 'double-dash', undefined), ['--seed=1'])
  t.strictSame(buildArgv([], {}, 'plain', undefined), [])
  const args = ['a']
  buildArgv(args, { seed: 1 }, 'plain', undefined)
  t.strictSame(args, ['a'], 'the args array is not modified')
})

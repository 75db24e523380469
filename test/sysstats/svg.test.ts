import t from 'tap'
import { SystemSeries } from '../../src/sysstats/series.js'
import { escapeXml, niceStep, renderSystemChart, timeGaps, timeTicks, yAxis } from '../../src/sysstats/svg.js'
import type { SystemSample } from '../../src/sysstats/types.js'

const T0 = 1_700_000_000_000
const GiB = 2 ** 30

/**
 * A small well-formedness check: one root <svg> in the SVG namespace, every
 * tag closed in order, attributes quoted, no raw "<" or stray "&" in text.
 * Returns the problem, or undefined.
 */
function malformed(xml: string): string | undefined {
  const body = xml.replace(/^<\?xml [^?]*\?>\s*/, '')
  const stack: string[] = []
  let roots = 0
  let i = 0
  while (i < body.length) {
    const lt = body.indexOf('<', i)
    const text = body.slice(i, lt === -1 ? body.length : lt)
    if (/&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+);)/i.test(text)) return `a stray "&" in ${JSON.stringify(text.slice(0, 40))}`
    if (text.includes('>')) return `a raw ">" in text ${JSON.stringify(text.slice(0, 40))}`
    if (stack.length === 0 && text.trim() !== '') return `text outside the root: ${JSON.stringify(text.slice(0, 40))}`
    if (lt === -1) break
    const gt = body.indexOf('>', lt)
    if (gt === -1) return 'an unclosed tag at the end'
    const tag = body.slice(lt + 1, gt)
    if (tag.includes('<')) return `a "<" inside the tag ${JSON.stringify(tag.slice(0, 40))}`
    i = gt + 1
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim()
      const open = stack.pop()
      if (open !== name) return `</${name}> closes <${open}>`
      continue
    }
    const selfClosing = tag.endsWith('/')
    const m = /^([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*\/?$/.exec(tag)
    if (!m) return `a malformed tag <${tag.slice(0, 60)}>`
    const attrs = [...m[2]!.matchAll(/([\w:-]+)="([^"]*)"/g)]
    const names = attrs.map((a) => a[1])
    if (new Set(names).size !== names.length) return `a repeated attribute in <${tag.slice(0, 60)}>`
    for (const [, , value] of attrs) if (/&(?!(amp|lt|gt|quot|apos);)/.test(value!)) return `a stray "&" in an attribute of <${m[1]}>`
    if (stack.length === 0) {
      roots++
      if (m[1] !== 'svg' || !tag.includes('xmlns="http://www.w3.org/2000/svg"')) return `the root is <${m[1]}>, not <svg xmlns=…>`
    }
    if (!selfClosing) stack.push(m[1]!)
  }
  if (stack.length) return `unclosed: ${stack.join(' > ')}`
  if (roots !== 1) return `${roots} roots`
  return undefined
}

/** The text of every <text> element, unescaped. */
const texts = (svg: string) =>
  [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) =>
    m[1]!.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&'))

function series(count: number, opts: { stepMs?: number; gpus?: number; memLimit?: number; peakMem?: number; cpu?: boolean; maxPoints?: number } = {}): SystemSeries {
  const s = new SystemSeries({ maxPoints: opts.maxPoints ?? 600 })
  for (let i = 0; i < count; i++) {
    const wave = (Math.sin(i / 7) + 1) / 2
    const x: SystemSample = { t: T0 + i * (opts.stepMs ?? 5000), memoryBytes: Math.round((opts.peakMem ?? 1.5 * GiB) * (0.5 + wave / 2)) }
    if (opts.cpu !== false) x.cpuPct = 20 + 300 * wave
    if (opts.memLimit !== undefined) x.memoryLimitBytes = opts.memLimit
    if (opts.gpus) {
      x.gpus = Array.from({ length: opts.gpus }, (_, g) => ({ index: g, utilPct: Math.round(100 * ((i * (g + 3)) % 17) / 17), memoryUsedMiB: 10_000 + 1000 * g + 37 * (i % 29), memoryTotalMiB: 81_920 }))
    }
    s.add(x)
  }
  return s
}

t.test('the tag-balance checker finds what is wrong', async (t) => {
  t.equal(malformed('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><g><text>a &amp; b</text></g><path d="M0,0"/></svg>'), undefined)
  t.match(malformed('<svg xmlns="http://www.w3.org/2000/svg"><g></svg>'), /closes <g>/)
  t.match(malformed('<svg xmlns="http://www.w3.org/2000/svg"><text>a & b</text></svg>'), /stray "&"/)
  t.match(malformed('<svg xmlns="http://www.w3.org/2000/svg"><text>a < b</text></svg>'), /"<" inside the tag|malformed tag/)
  t.match(malformed('<svg xmlns="http://www.w3.org/2000/svg"><rect x=1/></svg>'), /malformed tag/)
  t.match(malformed('<svg><g/></svg>'), /not <svg xmlns/)
  t.match(malformed('<svg xmlns="http://www.w3.org/2000/svg"/><svg xmlns="http://www.w3.org/2000/svg"/>'), /2 roots/)
})

t.test('CPU and memory only: their two panels, no GPU ones; well-formed, standalone, deterministic', async (t) => {
  const s = series(100)
  const svg = renderSystemChart(s, { title: 'project mnist · experiment 5f', subtitle: '100 samples' })
  t.equal(malformed(svg), undefined, 'well-formed')
  t.match(svg, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="900" height="\d+" viewBox="0 0 900 \d+" font-family="sans-serif">/)
  const ts = texts(svg)
  t.ok(ts.includes('CPU — % of one core'))
  t.ok(ts.includes('Memory'))
  t.notOk(ts.some((x) => x.startsWith('GPU')), 'no GPU panel, no GPU legend')
  t.ok(ts.includes('project mnist · experiment 5f'))
  t.ok(ts.includes('100 samples'))
  t.notMatch(svg, /href|url\(|<image|<script|@import/, 'nothing external')
  t.notMatch(svg, /NaN|Infinity|undefined/)
  t.equal(renderSystemChart(s, { title: 'project mnist · experiment 5f', subtitle: '100 samples' }), svg, 'the same series draws the same file')
  t.match(svg, /fill-opacity="0\.18"/, 'the max band')
  // Y ticks are round and in the panel's unit; the memory panel is in GiB (its peak is 1.5 GiB).
  t.ok(ts.includes('400 %') || ts.includes('350 %'), 'CPU ticks up past the peak of 320 %')
  t.ok(ts.includes('0.5 GiB') && ts.includes('1.5 GiB'))
  const h = Number(/height="(\d+)"/.exec(svg)![1])
  t.ok(h > 300 && h < 600, `two panels: ${h} px high`)
})

t.test('with GPUs: four panels, a legend with a distinct colour per GPU', async (t) => {
  const svg = renderSystemChart(series(300, { gpus: 3 }), { title: 'x' })
  t.equal(malformed(svg), undefined)
  const ts = texts(svg)
  for (const title of ['CPU — % of one core', 'Memory', 'GPU utilisation — %', 'GPU memory']) t.ok(ts.includes(title), title)
  t.equal(ts.filter((x) => x === 'GPU 0').length, 2, 'GPU 0 in both GPU legends')
  t.equal(ts.filter((x) => x === 'GPU 2').length, 2)
  const legendColours = [...svg.matchAll(/<line [^>]*stroke="(#[0-9a-f]{6})"[^>]*\/>\n<text[^>]*>GPU \d<\/text>/g)].map((m) => m[1])
  t.equal(legendColours.length, 6)
  t.equal(new Set(legendColours.slice(0, 3)).size, 3, 'three colours for three GPUs')
  t.strictSame(legendColours.slice(0, 3), legendColours.slice(3), 'the same colours in both GPU panels')
  t.ok(ts.includes('total 80 GiB'), 'the GPUs\' total memory, once')
  t.equal(ts.filter((x) => x.startsWith('total')).length, 1)
  t.ok(ts.includes('100 %'), 'utilisation up to 100 %')
  t.notOk(ts.includes('125 %'), 'and no further')
})

t.test('GPU readings without memory used: no GPU memory panel', async (t) => {
  const s = new SystemSeries()
  for (let i = 0; i < 10; i++) s.add({ t: T0 + i * 1000, gpus: [{ index: 1, utilPct: 50, memoryTotalMiB: 1000 }] })
  const svg = renderSystemChart(s, { title: 'x' })
  t.equal(malformed(svg), undefined)
  const ts = texts(svg)
  t.ok(ts.includes('GPU utilisation — %'))
  t.notOk(ts.includes('GPU memory'))
  t.notOk(ts.includes('CPU — % of one core'), 'no CPU readings: no CPU panel')
  t.notOk(ts.includes('Memory'))
  t.ok(ts.includes('GPU 1'))
})

t.test('the title and subtitle are escaped for XML', async (t) => {
  const title = 'a<b> & "c" \'d\' </svg><script>x</script>\u0001'
  const svg = renderSystemChart(series(5), { title, subtitle: '<&>' })
  t.equal(malformed(svg), undefined)
  t.notMatch(svg, /<script/)
  t.match(svg, /a&lt;b&gt; &amp; &quot;c&quot; &apos;d&apos; &lt;\/svg&gt;&lt;script&gt;x&lt;\/script&gt;</)
  t.ok(texts(svg).includes('<&>'))
  t.equal(escapeXml('&<>"\''), '&amp;&lt;&gt;&quot;&apos;')
  t.equal(escapeXml('a\u0000b\u0008c\td\ne\uFFFEf\uD800g😀'), 'abc\td\nefg😀', 'characters XML cannot hold are dropped, a pair kept')
  // The empty chart escapes too.
  const empty = renderSystemChart(new SystemSeries(), { title: '<x>' })
  t.equal(malformed(empty), undefined)
  t.match(empty, /&lt;x&gt;/)
})

t.test('600 points with 2 GPUs: well under 100 KB', async (t) => {
  const s = series(5000, { gpus: 2, memLimit: 2 * GiB })
  t.ok(s.points.length > 300 && s.points.length <= 600)
  const full = series(600, { gpus: 2, memLimit: 2 * GiB })
  t.equal(full.points.length, 600)
  for (const x of [s, full]) {
    const svg = renderSystemChart(x, { title: 'a long run', subtitle: 'with two GPUs' })
    t.equal(malformed(svg), undefined)
    t.ok(svg.length < 70_000, `${x.points.length} points: ${svg.length} bytes`)
    // Every number in a path has one decimal at most.
    const paths = [...svg.matchAll(/ d="([^"]*)"/g)].map((m) => m[1]!)
    t.notOk(paths.some((d) => /\d\.\d\d/.test(d)), 'path numbers rounded to 1 decimal')
  }
  const eight = renderSystemChart(series(600, { gpus: 8 }), { title: 'eight GPUs' })
  t.ok(eight.length < 120_000, `8 GPUs: ${eight.length} bytes`)
})

t.test('the memory limit: a dashed line when within 4× the peak, else in the title', async (t) => {
  const near = renderSystemChart(series(50, { peakMem: 1.5 * GiB, memLimit: 4 * GiB }), { title: 'x' })
  t.equal(malformed(near), undefined)
  t.ok(texts(near).includes('limit 4 GiB'))
  t.ok(texts(near).includes('Memory'))
  t.match(near, /<path d="M76,[\d.]+H876" stroke="#d62728"[^>]* stroke-dasharray="6 4"/)
  t.ok(texts(near).includes('4 GiB') || texts(near).includes('5 GiB'), 'the axis reaches the limit')

  const far = renderSystemChart(series(50, { peakMem: 1.5 * GiB, memLimit: 64 * GiB }), { title: 'x' })
  t.equal(malformed(far), undefined)
  t.ok(texts(far).includes('Memory (limit 64 GiB)'))
  t.notOk(texts(far).includes('limit 64 GiB'), 'no line label')
  t.notMatch(far, /stroke="#d62728"/, 'no limit line')
  t.notOk(texts(far).includes('10 GiB'), 'the axis is not stretched to the limit')

  const none = renderSystemChart(series(50), { title: 'x' })
  t.notMatch(none, /limit/)
})

t.test('x-axis: elapsed time with nice ticks; a 3-hour run in min/h', async (t) => {
  const svg = renderSystemChart(series(3 * 720 + 1, { stepMs: 5000 }), { title: 'three hours' })
  const labels = timeTicks(3 * 3600 * 1000).map((x) => x.label)
  t.strictSame(labels, ['0', '0.5 h', '1 h', '1.5 h', '2 h', '2.5 h', '3 h'])
  for (const l of labels) t.ok(texts(svg).includes(l), `"${l}" is on the chart`)
  t.notOk(texts(svg).some((x) => / (s|d)$/.test(x)), 'no seconds or days')

  t.strictSame(timeTicks(70 * 60 * 1000).map((x) => x.label), ['0', '10 min', '20 min', '30 min', '40 min', '50 min', '60 min', '70 min'])
  t.strictSame(timeTicks(100 * 1000).map((x) => x.label), ['0', '15 s', '30 s', '45 s', '60 s', '75 s', '90 s'])
  t.strictSame(timeTicks(2 * 60 * 1000).map((x) => x.label), ['0', '0.5 min', '1 min', '1.5 min', '2 min'])
  t.strictSame(timeTicks(7 * 86400 * 1000).map((x) => x.label), ['0', '1 d', '2 d', '3 d', '4 d', '5 d', '6 d', '7 d'])
  t.strictSame(timeTicks(36 * 3600 * 1000).map((x) => x.label), ['0', '6 h', '12 h', '18 h', '24 h', '30 h', '36 h'])
  // 4–8 ticks, increasing, in the span, for any span from 4 s to three years.
  for (let span = 4000; span < 3 * 365 * 86400 * 1000; span *= 1.17) {
    const ticks = timeTicks(span)
    const ok = ticks.length >= 4 && ticks.length <= 8 && ticks.every((x, i) => i === 0 ? x.t === 0 && x.label === '0' : x.t > ticks[i - 1]!.t && x.t <= span)
      && new Set(ticks.map((x) => x.label)).size === ticks.length && ticks.every((x) => /^(0|\d+(\.\d)? (s|min|h|d))$/.test(x.label))
    if (!ok) {
      t.fail(`${span} ms: ${ticks.map((x) => x.label).join(', ')}`)
      break
    }
  }
})

t.test('y-axis: from 0 to a round top above the peak, never 0', async (t) => {
  t.strictSame(yAxis(0, 100), { top: 100, ticks: [0, 20, 40, 60, 80, 100] })
  t.equal(yAxis(0, 1).top, 1)
  t.equal(yAxis(398, 100).top, 500)
  t.strictSame(yAxis(1.5, 1).ticks, [0, 0.5, 1, 1.5, 2])
  for (const max of [0.001, 0.7, 3, 98, 101, 1234, 65_000, 1e9]) {
    const { top, ticks } = yAxis(max, 0)
    t.ok(top >= max * 1.05 && top <= max * 2.2 && ticks.length >= 3 && ticks.length <= 8 && ticks.at(-1) === top, `${max}: ${ticks.join(' ')}`)
  }
  t.equal(niceStep(21), 25)
  t.equal(niceStep(0.3), 0.5)
  t.equal(niceStep(100), 100)
})

t.test('no samples, one sample, only empty samples', async (t) => {
  const empty = renderSystemChart(new SystemSeries(), { title: 'x' })
  t.equal(malformed(empty), undefined)
  t.ok(texts(empty).includes('no samples: the experiment ended before the first one'))
  t.notMatch(empty, /<path/)

  const s = new SystemSeries()
  s.add({ t: T0, cpuPct: 50, memoryBytes: 300 * 2 ** 20, gpus: [{ index: 0, utilPct: 10, memoryUsedMiB: 500 }] })
  const one = renderSystemChart(s, { title: 'x' })
  t.equal(malformed(one), undefined)
  t.equal((one.match(/<circle /g) ?? []).length, 4, 'a visible dot in each panel')
  t.match(one, /<circle cx="76" cy="[\d.]+" r="3"/)
  t.ok(texts(one).includes('400 MiB'), 'memory in MiB below a GiB')

  const blank = new SystemSeries()
  blank.add({ t: T0 })
  blank.add({ t: T0 + 5000 })
  const b = renderSystemChart(blank, { title: 'x' })
  t.equal(malformed(b), undefined)
  t.ok(texts(b).includes('no CPU, memory or GPU readings in 2 sample(s)'))
})

t.test('gaps: a missing stretch breaks the line; a lone reading is a dot', async (t) => {
  const s = new SystemSeries()
  const cpu = [10, 20, 30, undefined, 50, undefined, 70, 80]
  cpu.forEach((c, i) => s.add({ t: T0 + i * 1000, cpuPct: c }))
  const svg = renderSystemChart(s, { title: 'x' })
  const line = /<path d="([^"]*)" fill="none" stroke="#1f77b4" stroke-width="1.5"/.exec(svg)
  t.ok(line)
  t.equal((line![1]!.match(/M/g) ?? []).length, 2, 'two runs of the line')
  t.equal((svg.match(/<circle /g) ?? []).length, 1, 'the lone 50 as a dot')
})

t.test('a stretch without samples (FGMachine down while the experiment ran on) breaks the lines', async (t) => {
  const withGap = new SystemSeries()
  const even = new SystemSeries()
  const t0 = Date.UTC(2026, 11, 1)
  for (let i = 0; i < 120; i++) {
    withGap.add({ t: t0 + i * 5000 + (i >= 60 ? 30 * 60_000 : 0), cpuPct: 100 + i, memoryBytes: 2 ** 30 })
    even.add({ t: t0 + i * 5000, cpuPct: 100 + i, memoryBytes: 2 ** 30 })
  }
  t.same([...timeGaps(withGap.points)], [60], 'the first point after the 30 min gap')
  t.same([...timeGaps(even.points)], [], 'none in an even series')
  const lineStarts = (svg: string) =>
    [...svg.matchAll(/<path d="([^"]*)" fill="none" stroke="[^"]*" stroke-width="1\.5"/g)].reduce((n, m) => n + (m[1]!.match(/M/g)?.length ?? 0), 0)
  const broken = renderSystemChart(withGap, { title: 'x' })
  const whole = renderSystemChart(even, { title: 'x' })
  t.equal(lineStarts(whole), 2, 'one line each for CPU and memory')
  t.equal(lineStarts(broken), 4, 'each of them in two pieces')
})

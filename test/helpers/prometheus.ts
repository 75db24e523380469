/** One sample of the Prometheus text format: `name{label="value",…} value`. */
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*'
const LABEL = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"`
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*,?)?\\})? (\\S+)(?: -?\\d+)?$`)
/** As Prometheus reads them (Go's ParseFloat): NaN and Inf in any case. */
const VALUE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan)$/i
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

/**
 * Parse the Prometheus text exposition format (version 0.0.4), strictly:
 * throws on any line that is not a HELP, a TYPE, or a sample of a family
 * declared before it with both.
 */
export function parseExposition(text: string): { samples: Sample[]; types: Map<string, string>; help: Map<string, string> } {
  const types = new Map<string, string>()
  const help = new Map<string, string>()
  const samples: Sample[] = []
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline')
  for (const [i, line] of text.slice(0, -1).split('\n').entries()) {
    const where = `line ${i + 1} (${JSON.stringify(line)})`
    if (line === '') continue
    let m = /^# HELP (\S+) (.*)$/.exec(line)
    if (m) {
      if (!new RegExp(`^${NAME}$`).test(m[1]!)) throw new Error(`${where}: bad metric name`)
      if (help.has(m[1]!)) throw new Error(`${where}: HELP given twice`)
      help.set(m[1]!, m[2]!)
      continue
    }
    m = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (m) {
      if (!TYPES.has(m[2]!)) throw new Error(`${where}: unknown type`)
      if (types.has(m[1]!)) throw new Error(`${where}: TYPE given twice`)
      types.set(m[1]!, m[2]!)
      continue
    }
    if (line.startsWith('#')) throw new Error(`${where}: a comment that is neither HELP nor TYPE`)
    m = SAMPLE.exec(line)
    if (!m) throw new Error(`${where}: not a sample`)
    const [, name, rawLabels, rawValue] = m
    if (!VALUE.test(rawValue!)) throw new Error(`${where}: bad value`)
    const family = familyOf(name!, types)
    if (!family) throw new Error(`${where}: sample of no declared family`)
    if (!help.has(family)) throw new Error(`${where}: family ${family} has no HELP`)
    const labels: Record<string, string> = {}
    for (const l of (rawLabels ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
    }
    samples.push({ name: name!, labels, value: /nan/i.test(rawValue!) ? NaN : Number(rawValue!.replace(/inf$/i, 'Infinity')) })
  }
  return { samples, types, help }
}

function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue
    const base = name.slice(0, -suffix.length)
    const type = types.get(base)
    if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base
  }
  return undefined
}

/** The sum of the samples named `name` whose labels include `labels`. */
export function sumOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0)
}

/** Whether any sample is named `name`. */
export function has(samples: Sample[], name: string): boolean {
  return samples.some((s) => s.name === name)
}

import type { OptionStyle } from '../projects/schema.js'

export type OptionValue = string | number | boolean | null | object

/**
 * The experiment's options as argv elements after `args`, exactly as the
 * original FGMachine writes them (docs/PROTOCOL.md, "Options → command line").
 * No shell is involved: each element is passed as it is.
 *
 * `boolean` is the project's `boolean` field: "optional" passes a true flag
 * bare and leaves a false one out; anything else passes true/false as values.
 */
export function buildArgv(
  args: readonly string[],
  options: Readonly<Record<string, OptionValue>>,
  style: OptionStyle,
  boolean: string | undefined,
): string[] {
  const optional = boolean === 'optional'
  const entries = Object.entries(options).filter(([, v]) => !(optional && v === false))
  switch (style) {
    case 'plain':
    case 'single-dash': {
      const dash = style === 'single-dash' ? '-' : ''
      const out = [...args]
      for (const [k, v] of entries) {
        out.push(dash + k)
        if (!(optional && v === true)) out.push(valueText(v))
      }
      return out
    }
    case 'double-dash': {
      const out = [...args]
      for (const [k, v] of entries) out.push(optional && v === true ? `--${k}` : `--${k}=${valueText(v)}`)
      return out
    }
    case 'function': {
      const head = args.slice(0, -1)
      const fn = args.at(-1) ?? ''
      const params: string[] = []
      for (const [k, v] of entries) {
        params.push(matlabLiteral(k))
        if (!(optional && v === true)) params.push(matlabLiteral(v))
      }
      return [...head, `${fn}(${params.join(',')});`]
    }
  }
}

function valueText(v: OptionValue): string {
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v)
  return JSON.stringify(v)
}

/** Strings in single quotes (a quote doubled, as MATLAB escapes it), numbers and booleans bare. */
function matlabLiteral(v: OptionValue): string {
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  const s = typeof v === 'string' ? v : JSON.stringify(v)
  return `'${s.replaceAll("'", "''")}'`
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }

/**
 * Docker's size syntax (`--shm-size 8g`, `--memory 512m`): a number with an
 * optional binary unit b/k/m/g/t (kb, mb, … and kib, mib, … too). A bare number is bytes.
 */
export function parseBytes(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$/i.exec(value)
  if (!m) return undefined
  const unit = UNITS[m[2]!.toLowerCase()]!
  return Math.floor(Number(m[1]) * unit)
}

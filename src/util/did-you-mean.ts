/** Edit distance (insertions, deletions, substitutions, and swaps of two neighbours). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1)
      d[i]![j] = v
    }
  }
  return d[a.length]![b.length]!
}

/** The known word `word` was most likely meant as, if one is close enough (case and `-`/`_` aside). */
export function didYouMean(word: string, known: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/-/g, '_')
  const w = norm(word)
  let best: string | undefined
  let bestD = Infinity
  for (const k of known) {
    const d = editDistance(w, norm(k))
    if (d < bestD) {
      best = k
      bestD = d
    }
  }
  // A third of the word may be wrong, at most 3 letters: `capacty`, `shm_szie`, `keep_result`.
  return bestD <= Math.min(3, Math.max(1, Math.floor(w.length / 3))) ? best : undefined
}

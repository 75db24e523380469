/** MongoDB's limit on one document (FGLab keeps an experiment in one), as BSON. */
export const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
/** Left for what the experiment's document holds besides these fields (options, file list, dates). */
const DOCUMENT_ROOM = 256 * 1024
/** MongoDB's limit on nesting. */
const MAX_DEPTH = 100
const INT32 = 2 ** 31

export type ParsedFields = { ok: true; fields: Record<string, unknown> } | { ok: false; reason: string }

/** A results JSON file's text as the fields FGLab `$set`s: a JSON object, without `_id` (FGLab's) and `__proto__`. */
export function parseFields(text: string): ParsedFields {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    return { ok: false, reason: `not valid JSON (${(err as Error).message})` }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, reason: 'not a JSON object' }
  const fields = Object.fromEntries(Object.entries(value).filter(([k]) => k !== '_id' && k !== '__proto__'))
  return { ok: true, fields }
}

/**
 * Why FGLab's MongoDB will refuse these fields, every time (it answers 500):
 * a "." or a leading "$" in a field name at any depth, a NUL in one, nesting
 * past 100 levels, or more than a document holds. Undefined when it takes them.
 */
export function unstorable(fields: Record<string, unknown>): string | undefined {
  const { bytes, problem } = measure(fields)
  if (problem) return problem
  if (bytes > MAX_DOCUMENT_BYTES - DOCUMENT_ROOM) {
    return `it is ${(bytes / 2 ** 20).toFixed(1)} MiB as BSON, more than one FGLab document holds (MongoDB's limit is 16 MiB)`
  }
  return undefined
}

/** The fields' size as BSON (as the MongoDB driver under FGLab writes JS values), and the first name MongoDB refuses. */
export function measure(fields: Record<string, unknown>): { bytes: number; problem?: string } {
  let problem: string | undefined
  const size = (value: unknown, depth: number): number => {
    if (problem) return 0
    switch (typeof value) {
      case 'string':
        return 4 + Buffer.byteLength(value) + 1
      case 'number':
        return Number.isInteger(value) && value >= -INT32 && value < INT32 ? 4 : 8
      case 'boolean':
        return 1
      case 'object': {
        if (value === null) return 0
        if (depth >= MAX_DEPTH) {
          problem = `it is nested deeper than MongoDB's ${MAX_DEPTH} levels`
          return 0
        }
        let bytes = 5
        const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value)
        for (const [key, v] of entries) {
          if (!Array.isArray(value)) {
            if (key.includes('.')) problem ??= `field name ${JSON.stringify(key)} has a "." in it, which FGLab (MongoDB) cannot store: rename it (e.g. ${JSON.stringify(key.replaceAll('.', '_'))})`
            else if (key.startsWith('$')) problem ??= `field name ${JSON.stringify(key)} starts with "$", which FGLab (MongoDB) cannot store: rename it`
            else if (key.includes('\0')) problem ??= `field name ${JSON.stringify(key)} holds a NUL character, which FGLab (MongoDB) cannot store`
          }
          bytes += 1 + Buffer.byteLength(key) + 1 + size(v, depth + 1)
        }
        return bytes
      }
      default:
        return 0
    }
  }
  const bytes = size(fields, 0)
  return problem ? { bytes, problem } : { bytes }
}

/**
 * Cuts a byte stream into chunks that each end on a whole UTF-8 character,
 * carrying the bytes of a character split between two reads (at most 3) to
 * the next: each chunk then decodes on its own, when and if anyone reads it.
 */
export class Utf8Chunks {
  #carry: Buffer | undefined

  /** The whole characters so far (undefined when there are none yet). */
  push(data: Buffer): Buffer | undefined {
    let b = data
    if (this.#carry) {
      b = Buffer.concat([this.#carry, data])
      this.#carry = undefined
    }
    const cut = wholeCharsEnd(b)
    if (cut < b.length) this.#carry = Buffer.from(b.subarray(cut))
    return cut > 0 ? b.subarray(0, cut) : undefined
  }

  /** What is left at the end (a character cut short: it decodes as U+FFFD). */
  end(): Buffer | undefined {
    const rest = this.#carry
    this.#carry = undefined
    return rest
  }
}

/** Where the last whole character of `b` ends: before a lead byte whose character is not all there. */
function wholeCharsEnd(b: Buffer): number {
  for (let i = b.length - 1; i >= 0 && i >= b.length - 4; i--) {
    const byte = b[i]!
    if (byte < 0x80) return b.length // ASCII: everything up to here is whole
    if (byte >= 0xc0) {
      const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : 2
      return i + need <= b.length ? b.length : i
    }
    // A continuation byte: look further back for its lead.
  }
  return b.length
}

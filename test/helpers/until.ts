/**
 * Resolve when `check()` holds, asked every `everyMs`; reject after `timeoutMs`,
 * naming `what`. For a condition that nothing announces (a file on disk, a timer
 * armed): a test waits for it rather than sleeping a guess.
 */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

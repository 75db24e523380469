import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import type { FglabClient } from '../fglab/client.js'
import { parseFields, unstorable } from './fields.js'
import type { Outcome } from './ledger.js'
import { mimeType } from './mime.js'
import { multipartFile } from './upload.js'

/** A JSON results file larger than this is uploaded as a file, not read into fields (it could not be stored as them). */
const MAX_JSON_BYTES = 16 * 1024 * 1024

export interface ResultFileContext {
  client: FglabClient
  log: Logger
  /** Files larger than this are not sent (FGMACHINE_MAX_FILE_MB). */
  maxFileBytes: number
}

/** What a results file was, when it was read: size, modification time, inode. */
export function signature(st: { size: number; mtimeMs: number; ino: number }): string {
  return `${st.size}:${st.mtimeMs}:${st.ino}`
}

function mib(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`
}

/** Passing reasons not to open a file now (too many files open): tried again with the backoff. */
const PASSING = new Set(['EMFILE', 'ENFILE', 'EAGAIN', 'EINTR'])

/**
 * One attempt at sending one results file as it is now. It is opened without
 * following a symlink (an experiment may swap a file for a link to a host
 * file between the watch and the send) and read only through that open file.
 * A `*.json` file holding an object becomes fields on the experiment; one
 * FGLab could never store as fields is uploaded as a file instead (with a
 * note saying why); every other file is uploaded, streamed. Throws FGLab's
 * error (the caller retries or gives up); anything decided here is an
 * outcome, or undefined when there was nothing to send now (the file is gone,
 * is not a regular file, or FGLab already has it in this form): what the
 * ledger says of it stands, its note included.
 */
export async function sendResultFile(
  ctx: ResultFileContext,
  experimentId: string,
  file: string,
  /** Whether FGLab already has the file in this form (sent before a restart): it is not sent again. */
  alreadySent: (sig: string) => boolean = () => false,
): Promise<Outcome | undefined> {
  const name = path.basename(file)
  // Fields, not a child logger: a child per file would cost more than the upload of a small file.
  const at = { experimentId, file: name }
  const log = ctx.log
  let fh: FileHandle
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? ''
    if (code === 'ENOENT') {
      log.warn(at, 'results file disappeared before it could be sent')
      return undefined
    }
    if (code === 'ELOOP') {
      log.warn(at, 'results entry became a symlink; not sent')
      return undefined
    }
    if (PASSING.has(code)) throw new Error(`cannot open ${name} now (${code}); will try again`, { cause: err })
    // For good (e.g. a file only its writer may read): FGLab never gets it, so its folder stays.
    log.error({ ...at, code }, 'cannot read a results file; it is not sent, and the results folder is kept')
    return { sent: false, reason: `FGMachine cannot read it (${code})` }
  }
  try {
    const st = await fh.stat()
    const sig = signature(st)
    if (!st.isFile()) {
      log.warn(at, 'results entry is not a regular file; not sent')
      return undefined
    }
    if (alreadySent(sig)) return undefined
    if (st.size > ctx.maxFileBytes) {
      log.error({ ...at, bytes: st.size, maxBytes: ctx.maxFileBytes }, 'results file too large to send (FGMACHINE_MAX_FILE_MB); the results folder is kept')
      return { sent: false, reason: `${mib(st.size)}, more than FGMACHINE_MAX_FILE_MB (${Math.round(ctx.maxFileBytes / 2 ** 20)} MB)` }
    }
    let note: string | undefined
    if (name.toLowerCase().endsWith('.json')) {
      if (st.size > MAX_JSON_BYTES) {
        note = `uploaded as a file: at ${mib(st.size)} it is too big to become fields (MongoDB's limit is 16 MiB)`
      } else {
        const parsed = parseFields(await fh.readFile('utf8'))
        const problem = parsed.ok ? unstorable(parsed.fields) : parsed.reason
        if (parsed.ok && !problem) {
          if (Object.keys(parsed.fields).length === 0) {
            // `{}`: nothing to set (FGLab would answer 500 to an empty $set).
            log.debug(at, 'results JSON file holds no fields; nothing to send')
            return { sent: true, sig }
          }
          await ctx.client.updateExperiment(experimentId, parsed.fields)
          log.debug({ ...at, fields: Object.keys(parsed.fields) }, 'results fields sent')
          return { sent: true, sig }
        }
        note = `uploaded as a file, not as fields: ${problem}`
      }
      log.warn({ ...at, note }, 'results JSON file cannot become fields; uploading it as a file instead')
    }
    await ctx.client.uploadFiles(experimentId, await multipartFile(fh, st.size, name, mimeType(name)))
    log.debug({ ...at, bytes: st.size }, 'results file uploaded')
    return { sent: true, sig, ...(note && { note }) }
  } finally {
    await fh.close()
  }
}

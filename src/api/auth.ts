import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyRequest } from 'fastify'

/** The header a proxy (or a script) may send instead of `Authorization: Bearer <token>`. */
export const TOKEN_HEADER = 'x-fgmachine-token'

/** Methods that only read: GET (capacity, /gpus, /health, `/` and its WebSocket), HEAD, and CORS preflights. */
const OPEN_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest()

/** Constant-time comparison; hashing first makes the time independent of the lengths too. */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false
  return timingSafeEqual(digest(given), digest(expected))
}

/** The token a request carries: `Authorization: Bearer <token>`, else `X-FGMachine-Token: <token>`. */
export function requestToken(req: Pick<FastifyRequest, 'headers'>): string | undefined {
  const auth = req.headers.authorization
  if (typeof auth === 'string') {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(auth)
    if (m) return m[1]
  }
  const header = req.headers[TOKEN_HEADER]
  return typeof header === 'string' ? header.trim() : undefined
}

/**
 * FGMACHINE_TOKEN: when set, every call that changes something (POST and PUT:
 * start, kill, "Add to Machine", capacity reset) needs the token; reads and the
 * WebSocket stay open. Runs on `onRequest`, after CORS (so a 401 still carries
 * its headers and preflights are answered) and before any body is parsed.
 */
export function tokenAuth(app: FastifyInstance, token: string | undefined): void {
  if (!token) return
  app.log.info('FGMACHINE_TOKEN is set: POST and PUT calls need it (an unchanged FGLab sends none: put a proxy that adds it in front)')
  app.addHook('onRequest', async (req, reply) => {
    if (OPEN_METHODS.has(req.method)) return
    if (tokenMatches(requestToken(req), token)) return
    req.log.warn({ method: req.method, url: req.url, ip: req.ip }, 'refused a call without a valid FGMACHINE_TOKEN')
    return reply
      .status(401)
      .header('www-authenticate', 'Bearer realm="fgmachine"')
      .send({ error: 'This FGMachine needs its token: send "Authorization: Bearer <FGMACHINE_TOKEN>" or "X-FGMachine-Token: <FGMACHINE_TOKEN>"' })
  })
}

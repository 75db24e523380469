/**
 * The image's HEALTHCHECK: asks the running service's /health on loopback.
 * Exit 0 when healthy (or degraded: FGLab down), 1 otherwise.
 */
function port(): number {
  if (process.env.PORT) return Number(process.env.PORT)
  try {
    const u = new URL(process.env.FGMACHINE_URL ?? '')
    return Number(u.port || (u.protocol === 'https:' ? 443 : 80))
  } catch {
    return 5081
  }
}

const res = await fetch(`http://127.0.0.1:${port()}/health`, { signal: AbortSignal.timeout(4000) }).catch((err: Error) => err)
if (res instanceof Error) {
  console.error(`unhealthy: ${res.message}`)
  process.exit(1)
}
const body = await res.text()
console.log(body)
process.exit(res.ok ? 0 : 1)

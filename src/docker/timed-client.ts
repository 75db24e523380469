import { timed } from '../util/timed.js'
import { noSuchImage, type ContainerClient } from './container-client.js'

/**
 * The engine's short requests, by the name `fgmachine_docker_request_seconds`
 * gives them. Left out: those that last as long as a container or a pull
 * (wait, attach, follow, ensureImage), and stop, which lasts the program's own
 * shutdown (up to the kill grace): they time the experiment, not Docker.
 */
const TIMED: Partial<Record<keyof ContainerClient, string>> = {
  create: 'create',
  start: 'start',
  remove: 'remove',
  inspectContainer: 'inspect',
  listByLabel: 'list',
  stats: 'stats',
  ping: 'ping',
  engine: 'info',
}

/** `client`, with each short request's duration and failure told to `observe`. */
export function timedClient(client: ContainerClient, observe: (op: string, seconds: number, ok: boolean) => void): ContainerClient {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown
      const op = typeof prop === 'string' ? TIMED[prop as keyof ContainerClient] : undefined
      if (!op || typeof value !== 'function') return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      return (...args: unknown[]) =>
        timed(
          () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args),
          // A create for an image not on the host is how a pull begins (docker-runtime.ts), not a failure.
          (seconds, failed) => observe(op, seconds, failed === undefined || (op === 'create' && noSuchImage(failed))),
        )
    },
  })
}

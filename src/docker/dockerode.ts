import { createRequire } from 'node:module'
import path from 'node:path'
import type DockerType from 'dockerode'

const require = createRequire(import.meta.url)

/**
 * Modules dockerode and docker-modem require at their top for what most
 * FGMachines never do: BuildKit sessions (gRPC and protobufjs; FGMachine
 * builds no images) and `ssh://` engines (ssh2; only with such a
 * DOCKER_HOST). Together some 25 MB of resident memory in every FGMachine.
 */
const LAZY = ['dockerode/lib/session.js', 'docker-modem/lib/ssh.js']

/**
 * dockerode, with each module of LAZY put in require's cache as a stand-in
 * (a function, as each of them exports) that loads the real module the
 * first time it is called and hands the call on. Should a module move in a
 * later release, it is loaded as it is.
 */
function load(): typeof DockerType {
  for (const name of LAZY) {
    let file: string
    try {
      file = require.resolve(name, { paths: [path.dirname(require.resolve('dockerode'))] })
    } catch {
      continue // not where it was: loaded as it is
    }
    if (require.cache[file]) continue
    let real: ((...a: unknown[]) => unknown) | undefined
    const standIn = function (this: unknown, ...args: unknown[]): unknown {
      if (!real) {
        delete require.cache[file]
        real = require(file) as (...a: unknown[]) => unknown
      }
      return real.apply(this, args)
    }
    require.cache[file] = { id: file, filename: file, loaded: true, exports: standIn, children: [], paths: [] } as unknown as NodeJS.Module
  }
  return require('dockerode') as typeof DockerType
}

export const Docker = load()
export type Docker = DockerType

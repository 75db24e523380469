import { existsSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type Docker from 'dockerode'

/** Where the Docker engine is, from `DOCKER_HOST`, as the docker CLI reads it. */
export type DockerEndpoint =
  | { kind: 'socket'; path: string }
  | { kind: 'tcp'; host: string; port: number | undefined; tls: boolean }
  | { kind: 'ssh'; host: string; port: number; username: string | undefined }

/**
 * Docker's `DOCKER_HOST` forms: unix:///path (or a bare /path), tcp://host:port
 * (http:// and https:// too), ssh://user@host. Throws an Error saying what is
 * wrong with anything else (config.ts names the variable).
 */
export function parseDockerHost(dockerHost: string | undefined): DockerEndpoint {
  const v = dockerHost?.trim()
  if (!v) return { kind: 'socket', path: '/var/run/docker.sock' }
  if (v.startsWith('unix://')) return { kind: 'socket', path: v.slice('unix://'.length) || '/var/run/docker.sock' }
  if (v.startsWith('/')) return { kind: 'socket', path: v }
  const wrong = new Error(`must be unix:///path/to/docker.sock, tcp://host:port or ssh://user@host, not "${v}"`)
  let u: URL
  try {
    u = new URL(v)
  } catch {
    throw wrong
  }
  if (!u.hostname) throw wrong
  if (u.protocol === 'ssh:') return { kind: 'ssh', host: u.hostname, port: Number(u.port || 22), username: u.username ? decodeURIComponent(u.username) : undefined }
  if (u.protocol === 'tcp:' || u.protocol === 'http:' || u.protocol === 'https:') {
    return { kind: 'tcp', host: u.hostname, port: u.port ? Number(u.port) : undefined, tls: u.protocol === 'https:' }
  }
  throw wrong
}

/**
 * dockerode's options for `DOCKER_HOST`, as the docker CLI reads it: TCP uses
 * TLS when DOCKER_TLS_VERIFY or DOCKER_TLS is set (or the URL is https://), on
 * port 2376 unless one is given, with the client certificate from
 * DOCKER_CERT_PATH (default ~/.docker).
 */
export function dockerOptions(dockerHost: string | undefined, env: NodeJS.ProcessEnv = process.env): Docker.DockerOptions {
  const e = parseDockerHost(dockerHost)
  if (e.kind === 'socket') return { socketPath: e.path }
  if (e.kind === 'ssh') return { protocol: 'ssh', host: e.host, port: e.port, username: e.username, sshOptions: { agent: env.SSH_AUTH_SOCK } }
  const tls = e.tls || Boolean(env.DOCKER_TLS_VERIFY) || Boolean(env.DOCKER_TLS)
  if (!tls) return { host: e.host, port: e.port ?? 2375, protocol: 'http' }
  const certs = env.DOCKER_CERT_PATH || path.join(env.HOME ?? os.homedir(), '.docker')
  const pem = (name: string) => (existsSync(path.join(certs, name)) ? readFileSync(path.join(certs, name)) : undefined)
  const [ca, cert, key] = [pem('ca.pem'), pem('cert.pem'), pem('key.pem')]
  return { host: e.host, port: e.port ?? 2376, protocol: 'https', ...(ca && { ca }), ...(cert && key && { cert, key }) }
}

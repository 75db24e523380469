import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { DOCKER_HUB, registryOf } from './image-ref.js'

/** Docker Hub's key in config.json and for credential helpers, as the docker CLI writes it. */
export const DOCKER_HUB_KEY = 'https://index.docker.io/v1/'

/** Credentials for one registry, as the Engine API takes them (X-Registry-Auth). */
export interface RegistryAuth {
  username?: string
  password?: string
  identitytoken?: string
  serveraddress: string
}

/** What the Docker config says for one image's registry. */
export interface ResolvedAuth {
  /** The registry's key: host[:port], or DOCKER_HUB_KEY. */
  registry: string
  auth?: RegistryAuth
  /** Where the credentials came from, in words, e.g. `auths in /root/.docker/config.json`. */
  source?: string
  configFile: string
  /** What could not be read; the pull goes on without those credentials. */
  warnings: string[]
}

export interface AuthOptions {
  /** The folder of config.json; default $DOCKER_CONFIG, else ~/.docker (as the docker CLI). */
  configDir?: string
  /** For DOCKER_CONFIG, HOME and the credential helpers (their PATH). Default process.env. */
  env?: NodeJS.ProcessEnv
  /** A credential helper that has not answered by then is given up (ms). */
  helperTimeoutMs?: number
}

interface AuthEntry {
  auth?: string
  identitytoken?: string
  username?: string
  password?: string
}

interface DockerConfig {
  auths?: Record<string, AuthEntry>
  credHelpers?: Record<string, string>
  credsStore?: string
}

export function dockerConfigFile(opts: AuthOptions = {}): string {
  const env = opts.env ?? process.env
  const dir = opts.configDir ?? (env.DOCKER_CONFIG || path.join(env.HOME || os.homedir(), '.docker'))
  return path.join(dir, 'config.json')
}

/** The key of an image's registry in config.json: host[:port], or DOCKER_HUB_KEY. Undefined for an image id. */
export function registryKey(image: string): string | undefined {
  const domain = registryOf(image)
  return domain === DOCKER_HUB ? DOCKER_HUB_KEY : domain
}

/** As the CLI compares keys: without scheme or path (`https://ghcr.io` is `ghcr.io`); Docker Hub's names as one. */
function hostname(key: string): string {
  const host = key.replace(/^https?:\/\//i, '').split('/')[0] ?? ''
  return ['docker.io', 'index.docker.io', 'registry-1.docker.io'].includes(host) ? 'index.docker.io' : host
}

function lookup<T>(map: Record<string, T> | undefined, key: string): [string, T] | undefined {
  if (!map || typeof map !== 'object') return undefined
  if (Object.hasOwn(map, key)) return [key, map[key]!]
  return Object.entries(map).find(([k]) => hostname(k) === hostname(key))
}

async function readConfig(file: string, warnings: string[]): Promise<DockerConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') warnings.push(`cannot read ${file} (${(err as Error).message}): pulling without credentials`)
    return {}
  }
  try {
    const parsed = JSON.parse(text) as unknown
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('it holds no JSON object')
    return parsed as DockerConfig
  } catch (err) {
    warnings.push(`${file} is not a valid Docker config (${(err as Error).message}): pulling without credentials; fix it, or run \`docker login\` again`)
    return {}
  }
}

type HelperAnswer = { username: string; secret: string } | { notFound: true } | { failed: string }

/** `docker-credential-<name> get`: the registry on stdin, `{Username, Secret}` on stdout. */
function askHelper(name: string, registry: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<HelperAnswer> {
  return new Promise((resolve) => {
    // In a process group of its own, so that what it started goes with it.
    const child = spawn(`docker-credential-${name}`, ['get'], { env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] })
    // Given up at the time-out even if it ignores SIGTERM or a child of it holds its output: a pull never waits on it.
    const late = setTimeout(() => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
      child.stdout.destroy()
      child.stderr.destroy()
      resolve({ failed: `docker-credential-${name} did not answer within ${timeoutMs / 1000} s` })
    }, timeoutMs)
    let out = ''
    child.stdout.on('data', (b: Buffer) => (out += b.toString()))
    child.stderr.on('data', (b: Buffer) => (out += b.toString()))
    child.stdin.on('error', () => undefined)
    child.on('error', (err) =>
      resolve({ failed: (err as NodeJS.ErrnoException).code === 'ENOENT' ? `docker-credential-${name} is not on PATH` : err.message }),
    )
    child.on('close', (code, signal) => {
      clearTimeout(late)
      if (signal) return resolve({ failed: `docker-credential-${name} did not answer within ${timeoutMs / 1000} s` })
      if (code !== 0) return resolve(/credentials not found/i.test(out) ? { notFound: true } : { failed: out.trim() || `exit code ${code}` })
      try {
        const r = JSON.parse(out) as { Username?: unknown; Secret?: unknown }
        if (typeof r.Secret !== 'string') throw new Error('no Secret')
        resolve({ username: typeof r.Username === 'string' ? r.Username : '', secret: r.Secret })
      } catch {
        resolve({ failed: `docker-credential-${name} answered something other than {"Username", "Secret"}` })
      }
    })
    child.stdin.end(registry)
  })
}

function fromEntry(entry: AuthEntry, registry: string): RegistryAuth | string | undefined {
  if (typeof entry !== 'object' || entry === null) return undefined
  if (entry.identitytoken) return { identitytoken: entry.identitytoken, serveraddress: registry }
  if (entry.auth) {
    const plain = Buffer.from(entry.auth, 'base64').toString('utf8')
    const colon = plain.indexOf(':')
    if (colon <= 0) return 'is not base64 of "user:password"'
    return { username: plain.slice(0, colon), password: plain.slice(colon + 1), serveraddress: registry }
  }
  if (entry.username && entry.password) return { username: entry.username, password: entry.password, serveraddress: registry }
  return undefined
}

/**
 * The credentials the docker CLI would use to pull `image`, read afresh from
 * the Docker config (so a `docker login` after FGMachine started counts): a
 * credential helper for the registry (`credHelpers`, else `credsStore`), else
 * the `auths` entry. A missing config means no credentials; one that cannot be
 * read, or a helper that fails, gives a warning and the pull goes on.
 */
export async function resolveRegistryAuth(image: string, opts: AuthOptions = {}): Promise<ResolvedAuth> {
  const configFile = dockerConfigFile(opts)
  const registry = registryKey(image)
  const warnings: string[] = []
  if (!registry) return { registry: '', configFile, warnings }
  const config = await readConfig(configFile, warnings)
  const helper = lookup(config.credHelpers, registry)
  const store = helper?.[1] ?? (typeof config.credsStore === 'string' && config.credsStore ? config.credsStore : undefined)
  if (store) {
    const a = await askHelper(store, registry, opts.env ?? process.env, opts.helperTimeoutMs ?? 10_000)
    const source = `docker-credential-${store} (${helper ? 'credHelpers' : 'credsStore'} in ${configFile})`
    if ('secret' in a) {
      // As the CLI: the user name "<token>" means the secret is an identity token.
      const auth = a.username === '<token>' ? { identitytoken: a.secret, serveraddress: registry } : { username: a.username, password: a.secret, serveraddress: registry }
      return { registry, auth, source, configFile, warnings }
    }
    if ('failed' in a) warnings.push(`credential helper ${source} failed for ${registry}: ${a.failed}`)
  }
  const entry = lookup(config.auths, registry)
  if (!entry) return { registry, configFile, warnings }
  const auth = fromEntry(entry[1], registry)
  if (typeof auth === 'string') {
    warnings.push(`auths["${entry[0]}"].auth in ${configFile} ${auth}: pulling without credentials; run \`docker login\` again`)
    return { registry, configFile, warnings }
  }
  return { registry, auth, source: auth ? `auths["${entry[0]}"] in ${configFile}` : undefined, configFile, warnings }
}

/** Whether Docker's reason for a failed pull is the registry refusing who asked. */
export function isAuthFailure(message: string): boolean {
  return /\bunauthorized\b|authentication required|no basic auth credentials|access denied|access to the resource is denied|may require 'docker login'|(?:^|: )denied\b|\b401\b/i.test(message)
}

/** How to fix a pull the registry refused, for the error. */
export function loginAdvice(r: Pick<ResolvedAuth, 'registry' | 'auth' | 'source'>): string {
  const login = r.registry === DOCKER_HUB_KEY || !r.registry ? '`docker login`' : `\`docker login ${r.registry}\``
  const how = 'FGMachine reads ~/.docker/config.json or DOCKER_CONFIG; in a container mount it, e.g. -v ~/.docker/config.json:/root/.docker/config.json:ro'
  if (r.auth) return `the registry refused the credentials from ${r.source}: run ${login} on the host again (${how})`
  return `run ${login} on the host (${how})`
}

import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, copyFileSync, chmodSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/** A tiny image with busybox's shell and tools, built from Debian's busybox-static: no registry needed. */
export const BUSYBOX_IMAGE = 'fgmachine-test/busybox:1'

const APPLETS = [
  'sh', 'cat', 'echo', 'sleep', 'mkdir', 'printf', 'env', 'ls', 'head', 'dd', 'base64', 'rm', 'mv', 'cp', 'seq', 'true',
  'false', 'test', 'id', 'touch', 'sync', 'yes', 'kill', 'wc', 'tr', 'date', 'stat',
]

function docker(args: string[], input?: Buffer): string {
  return execFileSync('docker', args, { input, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['pipe', 'pipe', 'pipe'] }).trim()
}

export function imageExists(name: string): boolean {
  try {
    docker(['image', 'inspect', name])
    return true
  } catch {
    return false
  }
}

/**
 * `docker import` a root file system of busybox (with these applets, /tmp) and
 * whatever `extra` adds, as `name`, with these `--change` instructions.
 */
function importRootfs(name: string, changes: string[], applets: string[], extra?: (root: string) => void): void {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))
  if (!busybox) throw new Error('busybox is not installed: apt-get install busybox-static (.ci/run does this)')
  const root = mkdtempSync(path.join(os.tmpdir(), 'fgm-rootfs-'))
  try {
    mkdirSync(path.join(root, 'bin'))
    mkdirSync(path.join(root, 'tmp'))
    chmodSync(path.join(root, 'tmp'), 0o1777)
    copyFileSync(busybox, path.join(root, 'bin/busybox'))
    chmodSync(path.join(root, 'bin/busybox'), 0o755)
    for (const a of applets) symlinkSync('busybox', path.join(root, 'bin', a))
    extra?.(root)
    const tar = execFileSync('tar', ['-C', root, '-c', '.'], { maxBuffer: 512 * 1024 * 1024 })
    docker(['import', ...changes.flatMap((c) => ['--change', c]), '-', name], tar)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

/** Build BUSYBOX_IMAGE with `docker import` unless it is there already. */
export function ensureBusyboxImage(): string {
  if (!imageExists(BUSYBOX_IMAGE)) importRootfs(BUSYBOX_IMAGE, ['ENV PATH=/bin'], APPLETS)
  return BUSYBOX_IMAGE
}

/** BUSYBOX_IMAGE with an entrypoint (`echo entrypoint:`), for projects without `command`. */
export const ENTRYPOINT_IMAGE = 'fgmachine-test/entrypoint:1'

export function ensureEntrypointImage(): string {
  if (imageExists(ENTRYPOINT_IMAGE)) return ENTRYPOINT_IMAGE
  ensureBusyboxImage()
  const ctx = mkdtempSync(path.join(os.tmpdir(), 'fgm-entry-'))
  try {
    writeFileSync(path.join(ctx, 'Dockerfile'), `FROM ${BUSYBOX_IMAGE}\nENTRYPOINT ["/bin/echo", "entrypoint:"]\nCMD ["default"]\n`)
    docker(['build', '-q', '-t', ENTRYPOINT_IMAGE, ctx])
  } finally {
    rmSync(ctx, { recursive: true, force: true })
  }
  return ENTRYPOINT_IMAGE
}

/**
 * A stand-in for the official node:24-slim, built from this machine's Node
 * (process.execPath and the libraries it links), npm and busybox: enough to
 * build the project's Dockerfile offline (`--build-arg NODE_IMAGE=…`).
 */
export const NODE_IMAGE = 'fgmachine-test/node:24'

export function ensureNodeImage(): string {
  if (imageExists(NODE_IMAGE)) return NODE_IMAGE
  const npmDir = ['/usr/lib/node_modules/npm', '/usr/local/lib/node_modules/npm', path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm')].find((p) =>
    existsSync(path.join(p, 'bin/npm-cli.js')),
  )
  if (!npmDir) throw new Error('npm is not installed where the stand-in node image looks for it')
  // This machine reaches the npm registry through a TLS proxy whose CA is in the
  // system bundle: the stand-in trusts what this machine trusts.
  const caBundle = '/etc/ssl/certs/ca-certificates.crt'
  const hasCa = existsSync(caBundle)
  const applets = [...APPLETS, 'which', 'grep', 'sed', 'tar', 'gzip', 'find', 'xargs', 'chmod', 'chown', 'ln', 'readlink', 'uname', 'hostname', 'nc', 'wget']
  const changes = ['ENV PATH=/usr/local/bin:/usr/bin:/bin', 'ENV HOME=/root', 'CMD ["node"]']
  if (hasCa) changes.push(`ENV NODE_EXTRA_CA_CERTS=${caBundle}`, `ENV npm_config_cafile=${caBundle}`)
  importRootfs(NODE_IMAGE, changes, applets, (root) => {
    for (const d of ['usr/bin', 'usr/local/bin', 'usr/local/lib/node_modules', 'root', 'etc']) mkdirSync(path.join(root, d), { recursive: true })
    symlinkSync('/bin/busybox', path.join(root, 'usr/bin/env'))
    copyFileSync(process.execPath, path.join(root, 'usr/local/bin/node'))
    chmodSync(path.join(root, 'usr/local/bin/node'), 0o755)
    const libs = execFileSync('ldd', [process.execPath], { encoding: 'utf8' })
      .split('\n')
      .map((l) => /(\/\S+) \(0x/.exec(l)?.[1])
      .filter((l): l is string => Boolean(l))
    for (const lib of libs) {
      mkdirSync(path.join(root, path.dirname(lib)), { recursive: true })
      copyFileSync(lib, path.join(root, lib))
    }
    execFileSync('cp', ['-a', npmDir, path.join(root, 'usr/local/lib/node_modules/npm')])
    symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', path.join(root, 'usr/local/bin/npm'))
    symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', path.join(root, 'usr/local/bin/npx'))
    if (hasCa) {
      mkdirSync(path.join(root, 'etc/ssl/certs'), { recursive: true })
      copyFileSync(caBundle, path.join(root, caBundle))
    }
    writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n')
    writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\nnode:x:1000:\n')
  })
  return NODE_IMAGE
}

const DEFAULT_SOCKET = '/var/run/docker.sock'

/** The Unix socket a DOCKER_HOST names (a bare path, or unix:// with the default for none); undefined for tcp:// and ssh://. */
function socketOf(host: string): string | undefined {
  if (host.startsWith('unix://')) return host.slice('unix://'.length) || DEFAULT_SOCKET
  return host.startsWith('/') ? host : undefined
}

/** Is this the host's own engine's socket: /var/run/docker.sock, under any name that resolves to it? */
function isDefaultSocket(socket: string): boolean {
  if (['/var/run/docker.sock', '/run/docker.sock'].includes(path.resolve(socket))) return true
  try {
    const [a, b] = [statSync(socket), statSync(DEFAULT_SOCKET)]
    return a.dev === b.dev && a.ino === b.ino
  } catch {
    return false
  }
}

/**
 * DOCKER_HOST, when it names an engine for tests. Integration tests create, kill and
 * remove containers and images: never on the host's own engine (unset DOCKER_HOST, or
 * /var/run/docker.sock), which on a GPU box runs real work.
 */
export function testDockerHost(): string {
  const host = process.env.DOCKER_HOST?.trim()
  const socket = host ? socketOf(host) : DEFAULT_SOCKET
  if (!host || (socket !== undefined && isDefaultSocket(socket))) {
    throw new Error(
      `integration tests run on a Docker engine of their own, not on this host's (DOCKER_HOST=${host || 'unset'}): ` +
        'run them through `bash .ci/run` (it starts a private dockerd), or set DOCKER_HOST to a test engine ' +
        '(`eval "$(bash .ci/test-dockerd start)"` starts one)',
    )
  }
  return host
}

/** The test engine's Unix socket (for a container that drives it, as FGMachine's image does). */
export function testDockerSocket(): string {
  const socket = socketOf(testDockerHost())
  if (!socket) throw new Error(`this test needs the test engine's Unix socket, not DOCKER_HOST=${process.env.DOCKER_HOST}`)
  return socket
}

/**
 * Is the test engine reachable? Integration tests fail loudly when it is not (CI always
 * has one), and throw when DOCKER_HOST is not a test engine (testDockerHost).
 */
export function dockerAvailable(): boolean {
  testDockerHost()
  try {
    docker(['info', '--format', '{{.ServerVersion}}'])
    return true
  } catch {
    return false
  }
}

/** Remove every container carrying this label (cleanup that runs even when a test failed). */
export function removeContainersLabelled(label: string): void {
  const ids = docker(['ps', '-aq', '--filter', `label=${label}`]).split('\n').filter(Boolean)
  if (ids.length) docker(['rm', '-f', ...ids])
}

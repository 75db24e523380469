import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, copyFileSync, chmodSync, writeFileSync } from 'node:fs'
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

/** Build BUSYBOX_IMAGE with `docker import` unless it is there already. */
export function ensureBusyboxImage(): string {
  if (imageExists(BUSYBOX_IMAGE)) return BUSYBOX_IMAGE
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))
  if (!busybox) throw new Error('busybox is not installed: apt-get install busybox-static (.ci/run does this)')
  const root = mkdtempSync(path.join(os.tmpdir(), 'fgm-busybox-'))
  try {
    mkdirSync(path.join(root, 'bin'))
    mkdirSync(path.join(root, 'tmp'))
    chmodSync(path.join(root, 'tmp'), 0o1777)
    copyFileSync(busybox, path.join(root, 'bin/busybox'))
    chmodSync(path.join(root, 'bin/busybox'), 0o755)
    for (const a of APPLETS) symlinkSync('busybox', path.join(root, 'bin', a))
    const tar = execFileSync('tar', ['-C', root, '-c', '.'], { maxBuffer: 64 * 1024 * 1024 })
    docker(['import', '--change', 'ENV PATH=/bin', '-', BUSYBOX_IMAGE], tar)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
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

/** Is a Docker engine reachable? Integration tests fail loudly when it is not (CI always has one). */
export function dockerAvailable(): boolean {
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

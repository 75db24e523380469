import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export interface BareDockerd {
  /** DOCKER_HOST for it. */
  host: string
  close(): Promise<void>
}

function dockerAt(host: string, args: string[], input?: Buffer): string {
  return execFileSync('docker', ['-H', host, ...args], { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 256 * 1024 * 1024 }).trim()
}

/**
 * A second Docker engine, started without the NVIDIA hook on its PATH: what a
 * host without the NVIDIA Container Toolkit has. The named images are copied
 * into it from the main engine. Needs root, as dockerd does (CI runs as root),
 * and runs in its own network namespace, so it cannot touch the main engine's networks.
 */
export async function startBareDockerd(images: string[]): Promise<BareDockerd> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-bare-dockerd-'))
  const host = `unix://${dir}/docker.sock`
  // In a network namespace of its own: a dockerd started with --bridge=none deletes
  // any `docker0` it sees, which would take the main engine's bridge away.
  const child = spawn(
    'unshare',
    ['--net', '--', 'dockerd', '--data-root', `${dir}/data`, '--exec-root', `${dir}/exec`, '--pidfile', `${dir}/pid`, '-H', host, '--bridge=none', '--iptables=false', '--ip-masq=false'],
    { env: { ...process.env, PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  )
  let stderr = ''
  child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const deadline = Date.now() + 30_000
  for (;;) {
    try {
      dockerAt(host, ['info', '--format', '{{.ServerVersion}}'])
      break
    } catch {
      if (Date.now() > deadline || child.exitCode !== null) {
        child.kill('SIGKILL')
        throw new Error(`the bare dockerd did not start:\n${stderr}`)
      }
      await new Promise((r) => setTimeout(r, 200))
    }
  }
  for (const image of images) {
    dockerAt(host, ['load'], execFileSync('docker', ['save', image], { maxBuffer: 256 * 1024 * 1024 }))
  }
  return {
    host,
    async close() {
      try {
        const ids = dockerAt(host, ['ps', '-aq']).split('\n').filter(Boolean)
        if (ids.length) dockerAt(host, ['rm', '-f', ...ids])
      } catch {
        // the engine is going anyway
      }
      const pid = existsSync(`${dir}/pid`) ? Number(readFileSync(`${dir}/pid`, 'utf8')) : child.pid
      if (pid) process.kill(pid, 'SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))])
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

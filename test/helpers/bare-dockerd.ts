import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

export interface BareDockerd {
  /** DOCKER_HOST for it. */
  host: string
  /** Stop the daemon (SIGTERM: its containers stop with it) and start it again on the same data. */
  restart(opts?: { downMs?: number }): Promise<void>
  close(): Promise<void>
}

const run = promisify(execFile)

/**
 * A second Docker engine, started without the NVIDIA hook on its PATH: what a
 * host without the NVIDIA Container Toolkit has, and an engine a test may
 * restart. The named images are copied into it from the main engine. Needs
 * root, as dockerd does (CI runs as root), and runs in its own network
 * namespace, so it cannot touch the main engine's networks. Everything here is
 * asynchronous, so that a service under test in this process keeps running.
 */
export async function startBareDockerd(images: string[]): Promise<BareDockerd> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-bare-dockerd-'))
  const host = `unix://${dir}/docker.sock`
  let child: ChildProcess
  let exited: Promise<void>

  const launch = async () => {
    // In a network namespace of its own: a dockerd started with --bridge=none deletes
    // any `docker0` it sees, which would take the main engine's bridge away.
    child = spawn(
      'unshare',
      ['--net', '--', 'dockerd', '--data-root', `${dir}/data`, '--exec-root', `${dir}/exec`, '--pidfile', `${dir}/pid`, '-H', host, '--bridge=none', '--iptables=false', '--ip-masq=false'],
      { env: { ...process.env, PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdio: ['ignore', 'ignore', 'pipe'] },
    )
    let stderr = ''
    child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)))
    exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    const deadline = Date.now() + 30_000
    for (;;) {
      try {
        await run('docker', ['-H', host, 'info', '--format', '{{.ServerVersion}}'])
        return
      } catch {
        if (Date.now() > deadline || child.exitCode !== null) {
          child.kill('SIGKILL')
          throw new Error(`the bare dockerd did not start:\n${stderr}`)
        }
        await new Promise((r) => setTimeout(r, 200))
      }
    }
  }
  const stop = async () => {
    // unshare execs dockerd: the child is the daemon itself.
    child.kill('SIGTERM')
    await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))])
  }

  await launch()
  for (const image of images) {
    const tar = execFileSync('docker', ['save', image], { maxBuffer: 256 * 1024 * 1024 })
    execFileSync('docker', ['-H', host, 'load'], { input: tar, stdio: ['pipe', 'ignore', 'pipe'] })
  }
  return {
    host,
    async restart({ downMs = 0 } = {}) {
      await stop()
      await new Promise((r) => setTimeout(r, downMs))
      await launch()
    },
    async close() {
      try {
        const ids = (await run('docker', ['-H', host, 'ps', '-aq'])).stdout.split('\n').filter(Boolean)
        if (ids.length) await run('docker', ['-H', host, 'rm', '-f', ...ids])
      } catch {
        // the engine is going anyway
      }
      await stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

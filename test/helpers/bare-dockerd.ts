import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
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
 * What dockerd and its containerd run, and nothing else: a PATH of standard
 * directories holds the real NVIDIA hook on a GPU host (/usr/bin), and with it
 * dockerd would turn its `nvidia` device driver on.
 */
const ENGINE_BINARIES = ['dockerd', 'containerd', 'containerd-shim', 'containerd-shim-runc-v1', 'containerd-shim-runc-v2', 'runc', 'docker-init', 'docker-proxy']

/** A folder of links to ENGINE_BINARIES, found as `command -v` finds them (with the sbin folders after PATH). */
function engineBin(dir: string): string {
  const bin = path.join(dir, 'bin')
  mkdirSync(bin)
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'].filter((d) => d.startsWith('/'))
  for (const name of ENGINE_BINARIES) {
    const found = dirs.map((d) => path.join(d, name)).find((p) => {
      try {
        accessSync(p, constants.X_OK)
        return true
      } catch {
        return false
      }
    })
    if (found) symlinkSync(found, path.join(bin, name))
    else if (name === 'dockerd') throw new Error('dockerd is not installed')
  }
  return bin
}

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
  const bin = engineBin(dir)
  // Not the host's /etc/docker/daemon.json (runtimes, data-root, hosts…).
  writeFileSync(path.join(dir, 'daemon.json'), '{}')
  // dockerd uses a system containerd whenever /run/containerd/containerd.sock exists: an empty
  // tmpfs there, in a mount namespace of its own, makes it start a containerd of its own.
  const hideContainerd = existsSync('/run/containerd') ? 'mount -t tmpfs -o mode=0700,size=16m fgmbare /run/containerd && ' : ''
  let child: ChildProcess
  let exited: Promise<void>

  const launch = async () => {
    // In a network namespace of its own: a dockerd started with --bridge=none deletes
    // any `docker0` it sees, which would take the main engine's bridge away.
    child = spawn(
      'unshare',
      [
        '--net', '--mount', '--propagation', 'private', '--', 'sh', '-c', `${hideContainerd}PATH="$1"; export PATH; shift; exec "$@"`, 'sh', bin,
        'dockerd', '--config-file', `${dir}/daemon.json`, '--data-root', `${dir}/data`, '--exec-root', `${dir}/exec`, '--pidfile', `${dir}/pid`, '-H', host,
        '--bridge=none', '--iptables=false', '--ip-masq=false', '--ip-forward=false',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
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
    // unshare execs sh, which execs dockerd: the child is the daemon itself.
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

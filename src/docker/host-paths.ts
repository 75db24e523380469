import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { Logger } from 'pino'
import { withTimeout } from '../util/timeout.js'
import type { ContainerClient, ContainerMount } from './container-client.js'

/**
 * Paths as FGMachine sees them ↔ paths as the Docker host sees them.
 *
 * Experiments are FGMachine's *siblings*: when FGMachine runs in a container,
 * a bind mount for an experiment must name the host's path, not FGMachine's.
 * Its own mounts say how one maps to the other.
 */
export class HostPaths {
  /** FGMachine runs on the host: paths are the same on both sides. */
  static readonly onHost = new HostPaths(undefined)

  private constructor(
    /** FGMachine's own mounts, longest destination first; undefined on the host. */
    readonly mounts: readonly ContainerMount[] | undefined,
    readonly containerId?: string,
    /** In a container whose mounts Docker has not told yet: why. Nothing can be shared meanwhile. */
    readonly undetermined?: string,
  ) {}

  /** FGMachine runs in a container, but Docker could not say what its mounts are (yet). */
  static unknown(reason: string): HostPaths {
    return new HostPaths([], undefined, reason)
  }

  static inContainer(containerId: string, mounts: readonly ContainerMount[]): HostPaths {
    const sorted = mounts
      .filter((m) => m.source && m.destination.startsWith('/'))
      .sort((a, b) => b.destination.length - a.destination.length)
    return new HostPaths(sorted, containerId)
  }

  get inContainer(): boolean {
    return this.mounts !== undefined
  }

  /** The host's path for a path FGMachine sees, or undefined when no mount of FGMachine's holds it. */
  toHost(localPath: string): string | undefined {
    const p = path.resolve(localPath)
    if (!this.mounts) return p
    for (const m of this.mounts) {
      const dest = m.destination.replace(/\/+$/, '') || '/'
      if (p === dest || p.startsWith(dest === '/' ? '/' : dest + '/')) {
        return path.join(m.source, path.relative(dest, p))
      }
    }
    return undefined
  }

  /** Why `localPath` cannot be shared with sibling containers, or undefined when it can. */
  problem(localPath: string, what: string): string | undefined {
    if (this.toHost(localPath) !== undefined) return undefined
    if (this.undetermined) {
      return `${what} ${localPath} cannot be given to experiment containers yet: FGMachine runs in a container whose mounts Docker has not told it (${this.undetermined}); it asks again until Docker answers`
    }
    return (
      `${what} ${localPath} is inside FGMachine's container only, so experiment containers cannot share it: ` +
      `mount it from the host (docker run -v /some/host/folder:${localPath} … or a named volume) and restart FGMachine`
    )
  }
}

const CONTAINER_ID = /[0-9a-f]{64}/

/** FGMachine's own container id, from /proc (mountinfo, then cgroup v1), or undefined. */
export function ownContainerId(mountinfo: string, cgroup: string): string | undefined {
  // Docker bind-mounts these three files from /var/lib/docker/containers/<id>/ into every container.
  const m = /\/containers\/([0-9a-f]{64})\/(?:resolv\.conf|hostname|hosts)\b/.exec(mountinfo)
  if (m) return m[1]
  for (const line of cgroup.split('\n')) {
    const c = /(?:docker[-/]|\/)([0-9a-f]{64})(?:\.scope)?$/.exec(line.trim())
    if (c && CONTAINER_ID.test(c[1]!)) return c[1]
  }
  return undefined
}

/**
 * Whether /proc/self/mountinfo shows what a container runtime puts in every
 * container: /etc/hostname, /etc/hosts or /etc/resolv.conf as mount points of
 * their own (bind-mounted files). A host has none of them.
 */
export function containerFileMounts(mountinfo: string): boolean {
  // Fields: id parent major:minor root mount-point options …; paths escape spaces as \040.
  return mountinfo.split('\n').some((line) => /^(?:\/etc\/hostname|\/etc\/hosts|\/etc\/resolv\.conf)$/.test(line.split(' ')[4] ?? ''))
}

async function readOr(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch {
    return ''
  }
}

/**
 * Find out whether FGMachine runs in a container of the engine it drives, and
 * if so, its mounts. Never throws. A container the engine does not know (it
 * drives another engine) means the host's paths, said in the log; an engine
 * that does not answer means `HostPaths.unknown`, to be asked again.
 */
export async function detectHostPaths(
  docker: ContainerClient,
  log: Logger,
  procRoot = '/proc',
  timeoutMs = 10_000,
  /** Where /.dockerenv is looked for, and this machine's name (tests). */
  self: { dockerenv?: string; hostname?: string } = {},
): Promise<HostPaths> {
  const mountinfo = await readOr(`${procRoot}/self/mountinfo`)
  const id = ownContainerId(mountinfo, await readOr(`${procRoot}/self/cgroup`))
  // The hostname (a container's is its short id) is asked about only in what is
  // surely a container: /.dockerenv alone is no proof, as images of whole machines
  // (VMs, WSL, sandboxes made with `docker export`) carry it too, and on such a
  // host the engine would be asked about the host's name and the warning below
  // given at every start.
  const dockerenv = existsSync(self.dockerenv ?? '/.dockerenv')
  const hostname = dockerenv && containerFileMounts(mountinfo) ? (self.hostname ?? os.hostname()) : undefined
  const candidates = [id, hostname].filter((c): c is string => Boolean(c))
  if (candidates.length === 0) {
    log.info(dockerenv ? { ignored: '/.dockerenv (no container mounts in /proc/self/mountinfo)' } : {}, 'FGMachine runs on the host: experiment paths are used as they are')
    return HostPaths.onHost
  }
  let failure: string | undefined
  for (const candidate of candidates) {
    try {
      const self = await withTimeout(docker.inspectContainer(candidate), timeoutMs, `Docker did not answer within ${timeoutMs} ms`)
      if (!self) continue
      log.info(
        { containerId: self.id.slice(0, 12), mounts: self.mounts.map((m) => `${m.source}:${m.destination}`) },
        'FGMachine runs in a container: experiment paths are translated through its mounts',
      )
      return HostPaths.inContainer(self.id, self.mounts)
    } catch (err) {
      failure = (err as Error).message
    }
  }
  if (failure) {
    log.warn({ candidates, err: failure }, "cannot inspect FGMachine's own container: container projects wait until Docker answers")
    return HostPaths.unknown(failure)
  }
  log.warn(
    { candidates },
    'FGMachine seems to run in a container that the Docker engine it drives does not know: paths are used as they are (results must be at the same path on the host)',
  )
  return HostPaths.onHost
}

import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import t, { type Test } from 'tap'
import type { ContainerClient, ContainerDetails } from '../../src/docker/container-client.js'
import { containerFileMounts, detectHostPaths, ownContainerId } from '../../src/docker/host-paths.js'
import { LogSink } from '../helpers/harness.js'

const PROC = fileURLToPath(new URL('../fixtures/proc/', import.meta.url))
const ID = 'c0ffee'.repeat(10) + 'abcd'
const state = { status: 'running', running: true, exitCode: 0, oomKilled: false }

/** An engine that knows `known` (by id, id prefix or name) and records what it was asked. */
function engine(known: ContainerDetails[] = []) {
  const asked: string[] = []
  const docker = {
    async inspectContainer(idOrName: string) {
      asked.push(idOrName)
      return known.find((c) => c.id.startsWith(idOrName) || c.name === idOrName)
    },
  } as unknown as ContainerClient
  return { docker, asked }
}

/** A /.dockerenv that exists, in a folder of the test's own. */
function dockerenv(t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-root-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(path.join(dir, '.dockerenv'), '')
  return path.join(dir, '.dockerenv')
}

function logger() {
  const sink = new LogSink()
  return { sink, log: pino({ level: 'debug' }, sink) }
}

const warnings = (sink: LogSink) => sink.lines.filter((l) => Number(l.level) >= 40)

for (const host of ['plain-host', 'docker-host']) {
  t.test(`${host}: no container is found and nothing is said about one, /.dockerenv or not`, async (t) => {
    const mountinfo = readFileSync(path.join(PROC, host, 'self/mountinfo'), 'utf8')
    const cgroup = readFileSync(path.join(PROC, host, 'self/cgroup'), 'utf8')
    t.equal(ownContainerId(mountinfo, cgroup), undefined, 'no container id in its mountinfo or cgroup')
    t.equal(containerFileMounts(mountinfo), false, 'no /etc/hostname, /etc/hosts or /etc/resolv.conf mounted')
    // The engine knows no such container, or one named as this host (which must not be taken for FGMachine's).
    const namesake = { id: ID, name: 'vm', mounts: [{ type: 'bind', source: '/srv', destination: '/' }], labels: {}, state }
    for (const [withDockerenv, known] of [[true, []], [true, [namesake]], [false, []]] as const) {
      const what = `/.dockerenv: ${withDockerenv}, the engine knows ${known.length ? 'a container named as this host' : 'none'}`
      const { sink, log } = logger()
      const { docker, asked } = engine([...known])
      const hp = await detectHostPaths(docker, log, path.join(PROC, host), 1000, {
        dockerenv: withDockerenv ? dockerenv(t) : path.join(PROC, 'no-such-file'),
        hostname: 'vm',
      })
      t.notOk(hp.inContainer, `on the host (${what})`)
      t.same(asked, [], `the engine is asked about no container (${what})`)
      t.same(warnings(sink), [], `no warning (${what})`)
      t.ok(sink.find('FGMachine runs on the host: experiment paths are used as they are'), `it says it runs on the host (${what})`)
    }
  })
}

/** A Docker container's mountinfo whose bind mounts do not show where they come from (a root field of "/"). */
const CONTAINER_MOUNTS = `1320 1197 0:112 / / rw,relatime - overlay overlay rw,lowerdir=/l
1330 1320 0:120 / /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw
1331 1320 0:120 / /etc/hostname rw,relatime - ext4 /dev/sda1 rw
1332 1320 0:120 / /etc/hosts rw,relatime - ext4 /dev/sda1 rw
1333 1320 8:1 /srv/fgm /data rw,relatime - ext4 /dev/sda1 rw
`

function proc(t: Test, mountinfo: string, cgroup: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-proc-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(path.join(dir, 'self'))
  writeFileSync(path.join(dir, 'self/mountinfo'), mountinfo)
  writeFileSync(path.join(dir, 'self/cgroup'), cgroup)
  return dir
}

t.test('a real container is still found: by its hostname when /.dockerenv and its own /etc/hostname are there', async (t) => {
  const root = proc(t, CONTAINER_MOUNTS, '0::/\n')
  const mounts = [{ type: 'bind', source: '/srv/fgm', destination: '/data' }]
  const { sink, log } = logger()
  const { docker, asked } = engine([{ id: ID, name: 'fgmachine', mounts, labels: {}, state }])
  const hp = await detectHostPaths(docker, log, root, 1000, { dockerenv: dockerenv(t), hostname: ID.slice(0, 12) })
  t.same(asked, [ID.slice(0, 12)])
  t.equal(hp.containerId, ID)
  t.equal(hp.toHost('/data/results/x'), '/srv/fgm/results/x')
  t.same(warnings(sink), [])
})

t.test('a container the engine does not know is still said', async (t) => {
  const root = proc(t, CONTAINER_MOUNTS, '0::/\n')
  const { sink, log } = logger()
  const { docker } = engine()
  const hp = await detectHostPaths(docker, log, root, 1000, { dockerenv: dockerenv(t), hostname: ID.slice(0, 12) })
  t.notOk(hp.inContainer)
  t.match(warnings(sink).map((l) => l.msg), [/seems to run in a container that the Docker engine it drives does not know/])
})

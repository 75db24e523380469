import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import type { ContainerClient, ContainerDetails } from '../../src/docker/container-client.js'
import { detectHostPaths, HostPaths, ownContainerId } from '../../src/docker/host-paths.js'
import { LogSink } from '../helpers/harness.js'

const ID = 'a'.repeat(12) + '0123456789abcdef'.repeat(3) + 'b'.repeat(4)

// Lines as /proc/self/mountinfo shows them in a Docker container (overlay2, cgroup v1 host).
const MOUNTINFO = `1320 1197 0:112 / / rw,relatime master:590 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X:/var/lib/docker/overlay2/l/Y,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work
1321 1320 0:115 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1330 1320 8:1 /var/lib/docker/containers/${ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw
1331 1320 8:1 /var/lib/docker/containers/${ID}/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw
1332 1320 8:1 /srv/fgm /data rw,relatime - ext4 /dev/sda1 rw
`

t.test('own container id from mountinfo, else from cgroup v1 lines; none on the host', async (t) => {
  t.equal(ownContainerId(MOUNTINFO, ''), ID)
  t.equal(ownContainerId('', `12:memory:/docker/${ID}\n0::/\n`), ID)
  t.equal(ownContainerId('', `1:name=systemd:/system.slice/docker-${ID}.scope\n`), ID)
  t.equal(ownContainerId('1 0 8:1 / / rw - ext4 /dev/sda1 rw\n', '0::/user.slice/user-1000.slice/session-3.scope\n'), undefined)
})

t.test('paths map through the mount that holds them, the longest first', async (t) => {
  const hp = HostPaths.inContainer(ID, [
    { type: 'bind', source: '/srv/fgm', destination: '/data' },
    { type: 'volume', source: '/var/lib/docker/volumes/res/_data', destination: '/data/results', name: 'res' },
    { type: 'bind', source: '/var/run/docker.sock', destination: '/var/run/docker.sock' },
  ])
  t.ok(hp.inContainer)
  t.equal(hp.toHost('/data/results/5f0c'), '/var/lib/docker/volumes/res/_data/5f0c', 'a named volume, by its folder on the host')
  t.equal(hp.toHost('/data/other/x'), '/srv/fgm/other/x')
  t.equal(hp.toHost('/data'), '/srv/fgm')
  t.equal(hp.toHost('/database/x'), undefined, 'a prefix of the name is not a parent folder')
  t.equal(hp.toHost('/tmp/results'), undefined)
  t.equal(hp.toHost('/data/results/../../etc'), undefined, 'resolved first: no escape through ..')
  t.equal(hp.problem('/data/results', 'results'), undefined)
  t.match(hp.problem('/tmp/results', 'results'), /results \/tmp\/results is inside FGMachine's container only.*docker run -v \/some\/host\/folder:\/tmp\/results/)
})

t.test('on the host, paths stay as they are', async (t) => {
  t.notOk(HostPaths.onHost.inContainer)
  t.equal(HostPaths.onHost.toHost('/anything/at/all'), '/anything/at/all')
  t.equal(HostPaths.onHost.problem('/x', 'results'), undefined)
})

function fakeDocker(known: Record<string, ContainerDetails>): ContainerClient {
  return {
    async inspectContainer(id: string) {
      return known[id] ?? Object.values(known).find((c) => c.id.startsWith(id))
    },
  } as unknown as ContainerClient
}

/** A /proc as inside a container (Docker's mountinfo), and a logger to read. */
function inContainer(t: Test) {
  const proc = mkdtempSync(path.join(os.tmpdir(), 'fgm-proc-'))
  t.teardown(() => rmSync(proc, { recursive: true, force: true }))
  mkdirSync(path.join(proc, 'self'))
  writeFileSync(path.join(proc, 'self/mountinfo'), MOUNTINFO)
  writeFileSync(path.join(proc, 'self/cgroup'), '0::/\n')
  const sink = new LogSink()
  return { proc, sink, log: pino({ level: 'debug' }, sink) }
}

t.test('detection inspects its own container through the engine', async (t) => {
  const { proc, sink, log } = inContainer(t)
  const mounts = [{ type: 'bind', source: '/srv/fgm', destination: '/data' }]
  const state = { status: 'running', running: true, exitCode: 0, oomKilled: false }
  const hp = await detectHostPaths(fakeDocker({ [ID]: { id: ID, name: 'fgmachine', mounts, labels: {}, state } }), log, proc)
  t.equal(hp.containerId, ID)
  t.equal(hp.toHost('/data/results/x'), '/srv/fgm/results/x')
  t.ok(sink.find('FGMachine runs in a container: experiment paths are translated through its mounts'))

  const unknown = await detectHostPaths(fakeDocker({}), log, proc)
  t.notOk(unknown.inContainer, 'a container the engine does not know: paths as they are')
  t.ok(sink.find(/does not know/), 'and it says so')
})

t.test('an engine that fails or hangs when asked: undetermined, and every path refused with the reason until it answers', async (t) => {
  const { proc, sink, log } = inContainer(t)
  const failing = { inspectContainer: async () => Promise.reject(new Error('connect ENOENT /var/run/docker.sock')) } as unknown as ContainerClient
  const down = await detectHostPaths(failing, log, proc)
  t.ok(down.inContainer, 'not taken for the host')
  t.match(down.undetermined, /ENOENT/)
  t.equal(down.toHost('/data/results/x'), undefined, 'nothing maps to the host')
  t.match(down.problem('/data/results', 'results'), /results \/data\/results cannot be given to experiment containers yet: .*ENOENT.*asks again/)
  t.ok(sink.find(/container projects wait until Docker answers/))

  const hanging = { inspectContainer: () => new Promise(() => {}) } as unknown as ContainerClient
  const hung = await detectHostPaths(hanging, log, proc, 50)
  t.match(hung.undetermined, /did not answer within 50 ms/, 'a hung engine does not hold start-up')
})

t.test('dockerOptions: sockets, TCP with TLS as the docker CLI decides it, SSH', async (t) => {
  const { dockerOptions } = await import('../../src/docker/docker-host.js')
  const home = mkdtempSync(path.join(os.tmpdir(), 'fgm-home-'))
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const none = { HOME: home }
  t.strictSame(dockerOptions(undefined, none), { socketPath: '/var/run/docker.sock' })
  t.strictSame(dockerOptions('unix:///run/d.sock', none), { socketPath: '/run/d.sock' })
  t.strictSame(dockerOptions('tcp://10.0.0.5:2375', none), { host: '10.0.0.5', port: 2375, protocol: 'http' })
  t.strictSame(dockerOptions('tcp://10.0.0.5', none), { host: '10.0.0.5', port: 2375, protocol: 'http' }, 'plain TCP defaults to 2375')
  t.match(dockerOptions('tcp://10.0.0.5:2376', none), { protocol: 'http' }, 'a port alone does not mean TLS (as the CLI)')
  t.strictSame(dockerOptions('tcp://10.0.0.5', { ...none, DOCKER_TLS_VERIFY: 'yes' }), { host: '10.0.0.5', port: 2376, protocol: 'https' }, 'any DOCKER_TLS_VERIFY: TLS, on 2376')
  t.match(dockerOptions('https://docker.example', none), { protocol: 'https', port: 2376 })
  mkdirSync(path.join(home, '.docker'))
  for (const f of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(path.join(home, '.docker', f), `${f} content`)
  const tls = dockerOptions('tcp://10.0.0.5:2376', { ...none, DOCKER_TLS_VERIFY: '1' })
  t.equal(String(tls.ca), 'ca.pem content', 'certificates from ~/.docker when DOCKER_CERT_PATH is unset')
  t.equal(String(tls.cert), 'cert.pem content')
  t.equal(String(tls.key), 'key.pem content')
  t.match(dockerOptions('ssh://me@gpu-box', none), { protocol: 'ssh', host: 'gpu-box', port: 22, username: 'me' })
  t.throws(() => dockerOptions('foo', none), /must be unix:\/\/\/path/)
})

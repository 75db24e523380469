import { createRequire } from 'node:module'
import t from 'tap'
import { Docker } from '../../src/docker/dockerode.js'

const require = createRequire(import.meta.url)
const loaded = (name: string) => Object.keys(require.cache).some((k) => k.includes(`/node_modules/${name}/`))

t.test('dockerode without its BuildKit session: no gRPC in memory until a session is asked for', async (t) => {
  const docker = new Docker({ socketPath: '/nonexistent.sock' })
  t.type(docker.getContainer, 'function', 'dockerode as ever')
  t.notOk(loaded('@grpc/grpc-js'), 'gRPC is not loaded')
  t.notOk(loaded('protobufjs'), 'nor protobufjs')
  t.notOk(loaded('ssh2'), 'nor ssh2')

  // The stand-in loads the real session when called, and hands the call on.
  const withSession = require(require.resolve('dockerode/lib/session.js')) as (d: unknown, auth: unknown, handler: (err: Error | null) => void) => void
  const err = await new Promise<Error | null>((resolve) =>
    withSession({ modem: { dial: (_opts: unknown, cb: (err: Error) => void) => cb(new Error('no session here (fake)')) } }, {}, resolve),
  )
  t.match(err?.message, /no session here/, "the real session ran, and its handler got the dial's error")
  t.ok(loaded('@grpc/grpc-js'), 'gRPC loaded once a session was asked for')
})

t.test('an ssh:// engine still works: ssh2 is loaded when the first connection is made', async (t) => {
  const docker = new Docker({ protocol: 'ssh', host: '127.0.0.1', port: 1, username: 'nobody', sshOptions: { readyTimeout: 2000 } } as never)
  const err = await docker.ping().then(
    () => undefined,
    (e: Error) => e,
  )
  t.ok(err, 'nobody answers ssh on port 1')
  t.notMatch(err?.message ?? '', /is not a function|Cannot find module/, `the real ssh agent made the connection (${err?.message})`)
  t.ok(loaded('ssh2'), 'ssh2 loaded for it')
})

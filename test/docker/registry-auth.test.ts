import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { dockerConfigFile, isAuthFailure, loginAdvice, resolveRegistryAuth } from '../../src/docker/registry-auth.js'

const b64 = (s: string) => Buffer.from(s).toString('base64')

/** A Docker config folder holding `config` (a string is written as is), and a PATH folder for credential helpers. */
function dockerConfig(t: Test, config?: unknown) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-docker-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'config.json')
  if (config !== undefined) writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config))
  const bin = path.join(dir, 'bin')
  mkdirSync(bin)
  const asked = path.join(dir, 'asked')
  // A stand-in credential helper: the registry comes on stdin; it keeps what it was asked.
  writeFileSync(
    path.join(bin, 'docker-credential-fgmtest'),
    `#!/bin/sh
[ "$1" = get ] || exit 2
read -r reg
printf '%s\\n' "$reg" >> '${asked}'
case "$reg" in
  127.0.0.1:5000) echo '{"ServerURL":"127.0.0.1:5000","Username":"helper-user","Secret":"helper-pass"}' ;;
  ghcr.io) echo '{"ServerURL":"ghcr.io","Username":"<token>","Secret":"id-token"}' ;;
  broken.example) echo 'the keychain is locked' >&2; exit 3 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
`,
  )
  chmodSync(path.join(bin, 'docker-credential-fgmtest'), 0o755)
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` }
  return { dir, file, env, opts: { configDir: dir, env }, asked: () => readFileSync(asked, 'utf8').split('\n').filter(Boolean) }
}

t.test('where the config is read: the folder given, else $DOCKER_CONFIG, else ~/.docker', async (t) => {
  t.equal(dockerConfigFile({ configDir: '/etc/fgm-docker' }), '/etc/fgm-docker/config.json')
  t.equal(dockerConfigFile({ env: { DOCKER_CONFIG: '/srv/docker-config', HOME: '/home/u' } }), '/srv/docker-config/config.json')
  t.equal(dockerConfigFile({ env: { HOME: '/home/u' } }), '/home/u/.docker/config.json')
})

t.test('no config: no credentials, and nothing to warn of', async (t) => {
  const c = dockerConfig(t)
  const r = await resolveRegistryAuth('127.0.0.1:5000/team/model:1', c.opts)
  t.same(r, { registry: '127.0.0.1:5000', configFile: c.file, warnings: [] })
})

t.test('auths: user and password from `auth`, an identity token, keys as the CLI matches them', async (t) => {
  const c = dockerConfig(t, {
    auths: {
      '127.0.0.1:5000': { auth: b64('alice:s3cr:et') },
      'https://index.docker.io/v1/': { auth: b64('hub-user:hub-pass') },
      'https://ghcr.io': { identitytoken: 'tok-123' },
      'registry.example.com': {},
    },
  })
  const local = await resolveRegistryAuth('127.0.0.1:5000/team/model:1', c.opts)
  t.same(local.auth, { username: 'alice', password: 's3cr:et', serveraddress: '127.0.0.1:5000' })
  t.equal(local.source, `auths["127.0.0.1:5000"] in ${c.file}`)
  for (const hub of ['busybox', 'pytorch/pytorch:2.5', 'docker.io/library/node:24']) {
    const r = await resolveRegistryAuth(hub, c.opts)
    t.same(r.auth, { username: 'hub-user', password: 'hub-pass', serveraddress: 'https://index.docker.io/v1/' }, hub)
  }
  const ghcr = await resolveRegistryAuth('ghcr.io/org/model', c.opts)
  t.same(ghcr.auth, { identitytoken: 'tok-123', serveraddress: 'ghcr.io' }, 'an entry written with a scheme')
  t.equal(ghcr.registry, 'ghcr.io')
  const empty = await resolveRegistryAuth('registry.example.com/x', c.opts)
  t.same([empty.auth, empty.warnings], [undefined, []], 'an empty entry (as a credential store leaves) is no credentials')
  const other = await resolveRegistryAuth('quay.io/x/y', c.opts)
  t.equal(other.auth, undefined)
})

t.test('the config is read at each call: a `docker login` after start counts', async (t) => {
  const c = dockerConfig(t)
  t.equal((await resolveRegistryAuth('127.0.0.1:5000/m', c.opts)).auth, undefined)
  writeFileSync(c.file, JSON.stringify({ auths: { '127.0.0.1:5000': { auth: b64('bob:pw') } } }))
  t.match((await resolveRegistryAuth('127.0.0.1:5000/m', c.opts)).auth, { username: 'bob', password: 'pw' })
})

t.test('a malformed config: a warning naming the file, and no credentials', async (t) => {
  const c = dockerConfig(t, '{"auths": {')
  const r = await resolveRegistryAuth('127.0.0.1:5000/m', c.opts)
  t.equal(r.auth, undefined)
  t.equal(r.warnings.length, 1)
  t.match(r.warnings[0], `${c.file} is not a valid Docker config (`)
  t.match(r.warnings[0], /: pulling without credentials; fix it, or run `docker login` again$/)
  const arr = dockerConfig(t, '[]')
  t.match((await resolveRegistryAuth('m', arr.opts)).warnings, [/is not a valid Docker config \(it holds no JSON object\)/])
  const bad = dockerConfig(t, { auths: { '127.0.0.1:5000': { auth: b64('no-colon') } } })
  t.match((await resolveRegistryAuth('127.0.0.1:5000/m', bad.opts)).warnings, [`auths["127.0.0.1:5000"].auth in ${bad.file} is not base64 of "user:password"`])
})

t.test('credential helpers: credHelpers for the registry, else credsStore; the registry on stdin', async (t) => {
  const c = dockerConfig(t, {
    auths: { '127.0.0.1:5000': {}, 'quay.io': { auth: b64('file-user:file-pass') } },
    credHelpers: { '127.0.0.1:5000': 'fgmtest', 'ghcr.io': 'fgmtest', 'broken.example': 'fgmtest', 'nohelper.example': 'absent' },
    credsStore: 'fgmtest',
  })
  const local = await resolveRegistryAuth('127.0.0.1:5000/team/model:1', c.opts)
  t.same(local.auth, { username: 'helper-user', password: 'helper-pass', serveraddress: '127.0.0.1:5000' })
  t.equal(local.source, `docker-credential-fgmtest (credHelpers in ${c.file})`)
  t.same((await resolveRegistryAuth('ghcr.io/org/m', c.opts)).auth, { identitytoken: 'id-token', serveraddress: 'ghcr.io' }, 'the user "<token>" means an identity token')
  const hub = await resolveRegistryAuth('busybox', c.opts)
  t.same([hub.auth, hub.warnings], [undefined, []], 'credsStore: not found there is no credentials, no warning')
  t.match((await resolveRegistryAuth('quay.io/a/b', c.opts)).auth, { username: 'file-user' }, 'not found in the store: the auths entry')
  t.same(c.asked(), ['127.0.0.1:5000', 'ghcr.io', 'https://index.docker.io/v1/', 'quay.io'])
  const broken = await resolveRegistryAuth('broken.example/m', c.opts)
  t.equal(broken.auth, undefined)
  t.match(broken.warnings, [`credential helper docker-credential-fgmtest (credHelpers in ${c.file}) failed for broken.example: the keychain is locked`])
  const absent = await resolveRegistryAuth('nohelper.example/m', c.opts)
  t.match(absent.warnings, [/docker-credential-absent \(credHelpers in .*\) failed for nohelper\.example: docker-credential-absent is not on PATH$/])
})

t.test('which failures are the registry refusing, and what to do', async (t) => {
  for (const m of [
    'Head "http://127.0.0.1:40515/v2/fgmachine-test/rec/manifests/1": no basic auth credentials',
    'unauthorized',
    'Get "https://ghcr.io/v2/org/m/manifests/1": denied',
    "pull access denied for team/private, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
    'unauthorized: authentication required',
  ]) {
    t.ok(isAuthFailure(m), m)
  }
  for (const m of ['manifest unknown', 'write /var/lib/docker/tmp/x: no space left on device', 'toomanyrequests: You have reached your pull rate limit.']) {
    t.notOk(isAuthFailure(m), m)
  }
  const how = 'FGMachine reads ~/.docker/config.json or DOCKER_CONFIG; in a container mount it, e.g. -v ~/.docker/config.json:/root/.docker/config.json:ro'
  t.equal(loginAdvice({ registry: '127.0.0.1:5000' }), `run \`docker login 127.0.0.1:5000\` on the host (${how})`)
  t.equal(loginAdvice({ registry: 'https://index.docker.io/v1/' }), `run \`docker login\` on the host (${how})`)
  t.equal(
    loginAdvice({ registry: 'ghcr.io', auth: { identitytoken: 'x', serveraddress: 'ghcr.io' }, source: 'auths["ghcr.io"] in /c.json' }),
    `the registry refused the credentials from auths["ghcr.io"] in /c.json: run \`docker login ghcr.io\` on the host again (${how})`,
  )
})

t.test('a credential helper that never answers (and ignores SIGTERM, its child holding the output) is given up: a pull never waits on it', async (t) => {
  const c = dockerConfig(t, { auths: { 'hang.example': { auth: b64('file-user:file-pass') } }, credHelpers: { 'hang.example': 'hangs' } })
  const bin = path.join(c.dir, 'bin')
  writeFileSync(path.join(bin, 'docker-credential-hangs'), '#!/bin/sh\ntrap "" TERM\nsleep 30 &\nwait\n')
  chmodSync(path.join(bin, 'docker-credential-hangs'), 0o755)
  const r = await resolveRegistryAuth('hang.example/m:1', { ...c.opts, helperTimeoutMs: 300 })
  t.match(r.warnings, [/docker-credential-hangs .* did not answer within 0\.3 s/])
  t.match(r.auth, { username: 'file-user' }, 'the auths entry instead')
})

import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const ROOT = fileURLToPath(new URL('../', import.meta.url))

/** `node src/server.ts` (through tsx) with this environment, as if Node.js were `version`. */
function start(env: Record<string, string>, version?: string) {
  const pretend = version ? ['--import', `data:text/javascript,Object.defineProperty(process.versions,"node",{value:"${version}"})`] : []
  const r = spawnSync(process.execPath, [...pretend, '--import', 'tsx', 'src/server.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  })
  return { status: r.status, stderr: r.stderr }
}

t.test('too old a Node.js: one line that says which is needed, before anything else is loaded', async (t) => {
  for (const v of ['20.20.2', '22.11.0']) {
    const r = start({}, v)
    t.equal(r.status, 1, v)
    t.match(r.stderr, `fgmachine: needs Node.js 22.22 or newer (24 LTS recommended); this is v${v}`)
    t.notMatch(r.stderr, /TypeError|at .*node_modules/, 'no stack from a dependency')
  }
})

t.test('a good Node.js goes on to the configuration (which names what is missing)', async (t) => {
  const r = start({})
  t.equal(r.status, 78, 'EX_CONFIG')
  t.match(r.stderr, 'FGLAB_URL is required')
  t.notMatch(r.stderr, 'needs Node.js')
})

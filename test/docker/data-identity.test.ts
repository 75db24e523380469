import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { checkDataIdentity, DataIdentityError, dataKeyOf } from '../../src/docker/data-identity.js'
import { HostPaths } from '../../src/docker/host-paths.js'

t.test('the data folder as Docker sees it', async (t) => {
  t.equal(dataKeyOf('/srv/fgmachine', HostPaths.onHost), '/srv/fgmachine')
  const inside = HostPaths.inContainer('c0ffee', [{ type: 'bind', source: '/srv/fgmachine', destination: '/data' }])
  t.equal(dataKeyOf('/data', inside), '/srv/fgmachine')
  t.equal(dataKeyOf('/app/state', inside), 'container:c0ffee:/app/state', 'inside the container only: the container names it')
  t.equal(dataKeyOf('/data', HostPaths.unknown('Docker did not answer')), undefined, 'not known yet')
})

t.test('identity.json: written at a first start, the same place passes, another place is a copy and refused', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-ident-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await checkDataIdentity(dir, '/srv/a')
  t.match(JSON.parse(readFileSync(path.join(dir, 'identity.json'), 'utf8')), { dataKey: '/srv/a' })
  await checkDataIdentity(dir, '/srv/a')
  await t.rejects(checkDataIdentity(dir, '/srv/b'), DataIdentityError)
  await t.rejects(checkDataIdentity(dir, '/srv/b'), { message: /was made at \/srv\/a: it is a copy of another FGMachine's data folder.*If you moved the folder here yourself and nothing runs from \/srv\/a any more, delete only .*identity\.json/ })
  rmSync(path.join(dir, 'identity.json'))
  await checkDataIdentity(dir, '/srv/b')
  t.ok(existsSync(path.join(dir, 'identity.json')), 'deleted by hand: this place is the folder\'s now')
})

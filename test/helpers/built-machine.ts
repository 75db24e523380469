import { execFileSync } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/**
 * FGMachine built as users run it (`npm start`: `node <flags> dist/server.js`),
 * for tests that measure its memory: through tsx the process carries the
 * compiler too. Built into `.test-dist/<pid>/` (under the project, so that its
 * imports resolve), once per test file that asks: a folder of its own, as two
 * files run at once and a build rewrites what the other's machine is loading.
 * Removed when the test file's process ends.
 */
export function builtMachine(): { script: string; nodeArgs: string[] } {
  const out = path.join(ROOT, '.test-dist', String(process.pid))
  process.once('exit', () => rmSync(out, { recursive: true, force: true }))
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', out], { cwd: ROOT, stdio: 'inherit' })
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }
  return { script: path.join(out, 'server.js'), nodeArgs: pkg.scripts.start.split(/\s+/).filter((a) => a.startsWith('--')) }
}

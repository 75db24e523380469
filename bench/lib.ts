/**
 * What the benchmarks share: the service as a child process (the build, with
 * `npm start`'s node flags), cleanup on every way out, and small helpers.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

// --- settings (environment variables, for quick experiments) ----------------------------------
export const numEnv = (name: string, dflt: number): number => {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a number, got ${v}`)
  return n
}
/** The node flags `npm start` ships (package.json), so that the bench measures what users run; BENCH_SERVICE_NODE_ARGS overrides. */
function shippedNodeArgs(): string[] {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } }
  return pkg.scripts.start.split(/\s+/).filter((a) => a.startsWith('--'))
}
export const SERVICE_NODE_ARGS =
  process.env.BENCH_SERVICE_NODE_ARGS !== undefined ? process.env.BENCH_SERVICE_NODE_ARGS.split(/\s+/).filter(Boolean) : shippedNodeArgs()

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

// --- cleanup that runs on every way out -------------------------------------------------------
export const runId = `${process.pid}-${Date.now().toString(36)}`
export const tmp = mkdtempSync(path.join(os.tmpdir(), 'fgm-bench-'))
export const children = new Set<ChildProcess>()
export const machineIds = new Set<string>()
let cleanedUp = false

export function dockerQuiet(args: string[]): string {
  try {
    return execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
  } catch {
    return ''
  }
}

export function cleanup(): void {
  if (cleanedUp) return
  cleanedUp = true
  let killed = 0
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL')
      killed++
    }
  }
  // A create the engine was already handling when its client died still completes: let it, then remove.
  if (killed) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000)
  const filters = [`label=fgm-bench=${runId}`, ...[...machineIds].map((m) => `label=fgmachine.machine=${m}`)]
  for (const f of filters) {
    const ids = dockerQuiet(['ps', '-aq', '--filter', f]).split('\n').filter(Boolean)
    if (ids.length) dockerQuiet(['rm', '-f', ...ids])
  }
  rmSync(tmp, { recursive: true, force: true })
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`\nbench: ${sig}: cleaning up\n`)
    cleanup()
    process.exit(130)
  })
}

// --- small helpers --------------------------------------------------------------------------
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
export const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}
export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
export const fmtS = (ms: number) => `${(ms / 1000).toFixed(2)} s`

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

/** Keep `concurrency` of `n` jobs in flight: a new one starts as soon as one ends. */
export async function slidingWindow(n: number, concurrency: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < n) await job(next++)
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker))
}

function newestMtime(dir: string): number {
  let newest = 0
  for (const name of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, name.name)
    newest = Math.max(newest, name.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs)
  }
  return newest
}

/** `dist/` from `src/` with tsconfig.build.json, unless dist/server.js is newer than every source. */
/** The service's entry point: dist/server.js, or that of the build in BENCH_DIST (another version, to compare). */
export function serviceScript(): string {
  return path.resolve(process.env.BENCH_DIST ?? path.join(root, 'dist'), 'server.js')
}

export function buildIfNeeded(): void {
  if (process.env.BENCH_NO_BUILD === '1' || process.env.BENCH_DIST) return
  const out = path.join(root, 'dist/server.js')
  const stale = !existsSync(out) || statSync(out).mtimeMs < Math.max(newestMtime(path.join(root, 'src')), statSync(path.join(root, 'tsconfig.build.json')).mtimeMs)
  if (!stale) return
  process.stderr.write('bench: building dist/ (tsc -p tsconfig.build.json)\n')
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
}

export function dockerRun(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('docker', args, { stdio: ['ignore', 'ignore', 'pipe'] })
    children.add(child)
    let stderr = ''
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()))
    child.once('error', (err) => {
      children.delete(child)
      reject(err)
    })
    child.once('close', (code) => {
      children.delete(child)
      resolve({ code, stderr })
    })
  })
}

export function machineDescription(): Record<string, string> {
  const cpus = os.cpus()
  let osName = `${os.type()} ${os.release()}`
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))
    if (m) osName = `${m[1]} (kernel ${os.release()})`
  } catch {
    // not Linux
  }
  return {
    node: process.version,
    docker: dockerQuiet(['version', '--format', 'server {{.Server.Version}}, client {{.Client.Version}}']) || 'unknown',
    'storage driver': dockerQuiet(['info', '--format', '{{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}']) || 'unknown',
    cpu: `${cpus[0]?.model ?? 'unknown'} × ${cpus.length} (os.availableParallelism ${os.availableParallelism()})`,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    os: osName,
  }
}


/** Run a bench's main and exit with its code (2 when it could not run), cleaning up on the way out. */
export function runBench(name: string, main: () => Promise<number>): void {
  main().then(
    (code) => {
      cleanup()
      process.exit(code)
    },
    (err: unknown) => {
      process.stderr.write(`${name}: FAILED: ${(err as Error).stack ?? String(err)}\n`)
      cleanup()
      process.exit(2)
    },
  )
}

import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import pino from 'pino'
import t from 'tap'
import { usageOf } from '../../src/docker/docker-container-client.js'
import { GpuReader, processGroupSource } from '../../src/sysstats/sources.js'
import { TestClock } from '../helpers/test-clock.js'

/** A /proc of the test's own: `self/statm` and one `stat` per process. */
function fakeProc(procs: Array<{ pid: number; pgrp: number; state?: string; utime: number; stime: number; cutime?: number; cstime?: number; rss: number; comm?: string }>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fgm-proc-'))
  mkdirSync(path.join(dir, 'self'))
  // As many pages as this process really holds, so the page size reads as 4 KiB.
  writeFileSync(path.join(dir, 'self/statm'), `1000 ${Math.round(process.memoryUsage().rss / 4096)} 0 0 0 0 0\n`)
  mkdirSync(path.join(dir, 'not-a-pid'))
  for (const p of procs) {
    mkdirSync(path.join(dir, String(p.pid)))
    const after = [p.state ?? 'S', 1, p.pgrp, p.pgrp, 0, -1, 0, 0, 0, 0, 0, p.utime, p.stime, p.cutime ?? 0, p.cstime ?? 0, 20, 0, 1, 0, 100, 1000, p.rss]
    writeFileSync(path.join(dir, String(p.pid), 'stat'), `${p.pid} (${p.comm ?? 'python'}) ${after.join(' ')} 0 0 0\n`)
  }
  return dir
}

t.test('a process group: CPU ticks of its live processes and their reaped children, resident pages summed', async (t) => {
  const proc = fakeProc([
    { pid: 100, pgrp: 100, utime: 250, stime: 50, cutime: 100, cstime: 0, rss: 1000, comm: 'train (v2) x' },
    { pid: 101, pgrp: 100, utime: 100, stime: 0, rss: 500 },
    { pid: 102, pgrp: 100, state: 'Z', utime: 999, stime: 999, rss: 0 },
    { pid: 200, pgrp: 200, utime: 5000, stime: 0, rss: 99999 },
  ])
  const usage = await processGroupSource(100, proc)()
  t.same(usage, { cpuNs: ((400 + 100 + 1998) / 100) * 1e9, memoryBytes: 1500 * 4096 }, 'a zombie\'s time counts until it is reaped, other groups are left out; a name with ") " is read right')
  t.equal(await processGroupSource(300, proc)(), undefined, 'no process left in the group: it no longer runs')
  const onlyZombie = fakeProc([{ pid: 400, pgrp: 400, state: 'Z', utime: 10, stime: 0, rss: 0 }])
  t.equal(await processGroupSource(400, onlyZombie)(), undefined, 'only a zombie left: it no longer runs')
})

t.test('a real process group on this machine', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  // Busy until it has spent 0.4 s of CPU (not of the clock, which a loaded machine stretches), then idle.
  const busy = 'const u = () => { const c = process.cpuUsage(); return c.user + c.system }; while (u() < 400000); console.log("busy"); setTimeout(() => {}, 30000)'
  const child = spawn(process.execPath, ['-e', busy], { detached: true, stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL')
    } catch {
      // gone
    }
  })
  await new Promise((resolve) => child.stdout!.once('data', resolve))
  const usage = await processGroupSource(child.pid!)()
  // /proc counts in clock ticks (10 ms), the child by getrusage: a little under 0.4 s may show.
  t.ok(usage && usage.cpuNs! >= 0.3e9, `it spent its busy 0.4 s (${usage?.cpuNs} ns)`)
  t.ok(usage && usage.memoryBytes! > 10 * 1024 * 1024, `node holds over 10 MiB (${usage?.memoryBytes})`)
})

t.test("Docker's stats: memory without the inactive page cache, cgroup v1 and v2", async (t) => {
  t.same(usageOf({ cpu_stats: { cpu_usage: { total_usage: 5e9 } }, memory_stats: { usage: 300, stats: { inactive_file: 100 } } }), { cpuNs: 5e9, memoryBytes: 200 })
  t.same(usageOf({ cpu_stats: { cpu_usage: { total_usage: 5e9 } }, memory_stats: { usage: 300, stats: { total_inactive_file: 50 } } }), { cpuNs: 5e9, memoryBytes: 250 })
  t.same(usageOf({ cpu_stats: { cpu_usage: { total_usage: 1 } }, memory_stats: { usage: 300, stats: { inactive_file: 400 } } }), { cpuNs: 1, memoryBytes: 300 }, 'never below zero')
  t.equal(usageOf({ cpu_stats: { cpu_usage: { total_usage: 0 } }, memory_stats: {} }), undefined, 'a stopped container answers zeros: no reading')
})

t.test('GPU readings: one nvidia-smi call for every experiment that asks meanwhile; a failure said once and read as no values', async (t) => {
  const clock = new TestClock({ auto: false })
  const warnings: string[] = []
  const log = pino({ level: 'info' }, { write: (l: string) => warnings.push((JSON.parse(l) as { msg: string }).msg) })
  let calls = 0
  let fail = false
  const smi = async () => {
    calls++
    if (fail) throw new Error('nvidia-smi did not answer within 10000 ms (a hung driver?)')
    return '0, GPU-aaaaaaaa-0000-0000-0000-000000000000, NVIDIA H100, 81559, 20480, 87, Disabled\n1, GPU-bbbbbbbb-0000-0000-0000-000000000000, NVIDIA H100, 81559, 1024, 3, Disabled\n'
  }
  const reader = new GpuReader(log, clock, 2500, smi)
  const [a, b] = await Promise.all([reader.read(), reader.read()])
  t.equal(calls, 1, 'two asking at once: one call')
  t.equal(a, b)
  t.same(a.get(0), { index: 0, utilPct: 87, memoryUsedMiB: 20480, memoryTotalMiB: 81559 })
  t.same(a.get(1)?.utilPct, 3)
  await reader.read()
  t.equal(calls, 1, 'within maxAgeMs: the last reading')
  clock.advance(2500)
  fail = true
  t.equal((await reader.read()).size, 0, 'a failure reads as nothing (never as zeros)')
  clock.advance(2500)
  await reader.read()
  t.equal(calls, 3)
  t.equal(warnings.filter((w) => /cannot read the GPUs/.test(w)).length, 1, 'said once while it keeps failing')
  fail = false
  clock.advance(2500)
  t.equal((await reader.read()).size, 2)
  t.ok(warnings.some((w) => /answers again/.test(w)))
})

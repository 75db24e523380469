import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pino from 'pino'
import t from 'tap'
import { discoverGpus, parseOverride, runNvidiaSmi, type NvidiaSmi } from '../../src/gpu/discovery.js'
import { explainFailure, GpuQueryError, parseGpuQuery, QUERY_ARGS } from '../../src/gpu/nvidia-smi.js'
import { LogSink } from '../helpers/harness.js'
import { FIXTURES } from '../helpers/stand-in-gpus.js'

const fixture = (name: string) => readFileSync(path.join(FIXTURES, name), 'utf8')

t.test('parses two H100s', async (t) => {
  const gpus = parseGpuQuery(fixture('h100x2.csv'))
  t.same(gpus, [
    { index: 0, uuid: 'GPU-8f6e3a52-9c1d-4b7e-a0f3-2d5c6b7a8e91', name: 'NVIDIA H100 80GB HBM3', memoryTotalMiB: 81559, memoryUsedMiB: 1, utilizationPct: 0, migMode: 'Disabled' },
    { index: 1, uuid: 'GPU-1b2c3d4e-5f60-4718-9a0b-c1d2e3f4a5b6', name: 'NVIDIA H100 80GB HBM3', memoryTotalMiB: 81559, memoryUsedMiB: 1, utilizationPct: 0, migMode: 'Disabled' },
  ])
})

t.test('[N/A] and [Not Supported] become missing values, not errors', async (t) => {
  const a100 = parseGpuQuery(fixture('a100-mig.csv'))
  t.equal(a100[0]!.utilizationPct, undefined)
  t.equal(a100[0]!.migMode, 'Enabled')
  t.equal(a100[1]!.memoryUsedMiB, 37)
  const t4 = parseGpuQuery(fixture('t4.csv'))
  t.equal(t4[0]!.migMode, undefined)
  t.equal(t4[0]!.name, 'Tesla T4')
  const rtx = parseGpuQuery(fixture('rtx3090-not-supported.csv'))
  t.equal(rtx[0]!.utilizationPct, undefined)
  t.equal(rtx[0]!.memoryUsedMiB, 512)
  t.equal(rtx[1]!.memoryUsedMiB, undefined)
  t.equal(rtx.length, 2)
})

t.test('sorted by index; blank lines and CRLF tolerated; garbage refused with the line', async (t) => {
  const text = '1, GPU-b, B, 10, 0, 0, Disabled\r\n\r\n0, GPU-a, A, 10, 0, 0, Disabled\r\n'
  t.same(parseGpuQuery(text).map((g) => g.index), [0, 1])
  t.same(parseGpuQuery(''), [])
  t.throws(() => parseGpuQuery('Failed to initialize NVML: Unknown Error'), { code: 'FGM_GPU_QUERY', name: 'GpuQueryError' })
  t.throws(() => parseGpuQuery('x, GPU-a, A, 1, 0, 0, Disabled'), /unexpected nvidia-smi output: x, GPU-a/)
})

t.test('a name with a comma is kept whole', async (t) => {
  const [g] = parseGpuQuery('0, GPU-a, Quadro RTX 8000, rev 2, 49152, 0, 3, [N/A]\n')
  t.equal(g!.name, 'Quadro RTX 8000, rev 2')
  t.equal(g!.memoryTotalMiB, 49152)
  t.equal(g!.utilizationPct, 3)
})

t.test('failures are explained in words a user can act on', async (t) => {
  t.match(explainFailure(fixture('driver-mismatch.txt')), /driver\/library version mismatch.*reboot/)
  t.match(explainFailure(fixture('no-driver.txt')), /couldn't communicate with the NVIDIA driver.*lsmod/)
  t.equal(explainFailure(fixture('no-devices.txt')), 'nvidia-smi found no GPUs')
  t.equal(explainFailure('\nsomething else\nmore'), 'something else')
})

function sinkLog() {
  const sink = new LogSink()
  return { sink, log: pino({ level: 'debug' }, sink) }
}

const answering = (text: string): NvidiaSmi => async (args) => {
  if (args.join(' ') !== QUERY_ARGS.join(' ')) throw new Error('unexpected args')
  return text
}
const failing = (err: Error): NvidiaSmi => async () => {
  throw err
}

t.test('discovery: every GPU, or those FGMACHINE_GPUS names (index or UUID)', async (t) => {
  const { log, sink } = sinkLog()
  t.same((await discoverGpus({ log, nvidiaSmi: answering(fixture('h100x2.csv')) })).map((g) => g.index), [0, 1])
  t.same((await discoverGpus({ log, override: '1', nvidiaSmi: answering(fixture('h100x2.csv')) })).map((g) => g.index), [1])
  t.same((await discoverGpus({ log, override: 'GPU-8f6e3a52-9c1d-4b7e-a0f3-2d5c6b7a8e91', nvidiaSmi: answering(fixture('h100x2.csv')) })).map((g) => g.index), [0])
  t.same(await discoverGpus({ log, override: '0, 7', nvidiaSmi: answering(fixture('h100x2.csv')) }).then((g) => g.map((x) => x.index)), [0])
  t.ok(sink.lines.some((l) => l.msg === 'FGMACHINE_GPUS names GPUs nvidia-smi does not list; they are left out' && JSON.stringify(l.missing) === '[7]'))
  t.same(await discoverGpus({ log, override: 'none', nvidiaSmi: failing(new Error('must not run')) }), [])
})

t.test('discovery never throws: no nvidia-smi, broken driver, hung nvidia-smi → zero GPUs and one clear line', async (t) => {
  const enoent = Object.assign(new Error('nvidia-smi not found'), { code: 'ENOENT' })
  for (const [what, err, msg] of [
    ['missing', enoent, /no nvidia-smi on this machine/],
    ['mismatch', new GpuQueryError(explainFailure(fixture('driver-mismatch.txt'))), /GPU discovery failed/],
    ['hung', new GpuQueryError('nvidia-smi did not answer within 10000 ms (a hung driver?)'), /GPU discovery failed/],
    ['no devices', new GpuQueryError('nvidia-smi found no GPUs'), /nvidia-smi found no GPUs/],
  ] as const) {
    const { log, sink } = sinkLog()
    t.same(await discoverGpus({ log, nvidiaSmi: failing(err) }), [], what)
    t.equal(sink.lines.filter((l) => msg.test(String(l.msg))).length, 1, `${what}: said once`)
  }
})

t.test('the real nvidia-smi call: answers, failures, a missing binary, and a hang that holds its pipes', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-nvsmi-'))
  const pidFile = path.join(dir, 'grandchild.pid')
  const savedPath = process.env.PATH
  t.teardown(() => {
    process.env.PATH = savedPath
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL')
    } catch {
      // already gone, or never started
    }
    rmSync(dir, { recursive: true, force: true })
  })
  const standIn = (script: string) => {
    writeFileSync(path.join(dir, 'nvidia-smi'), `#!/bin/sh\n${script}\n`)
    chmodSync(path.join(dir, 'nvidia-smi'), 0o755)
  }
  process.env.PATH = `${dir}:${savedPath}`

  standIn(`printf '%s' '${fixture('h100x2.csv')}'`)
  t.same(parseGpuQuery(await runNvidiaSmi(QUERY_ARGS, 10_000)).map((g) => g.index), [0, 1], 'its output, parsed')

  standIn(`echo "Failed to initialize NVML: Driver/library version mismatch"; exit 18`)
  await t.rejects(runNvidiaSmi(QUERY_ARGS, 10_000), { name: 'GpuQueryError', message: /version mismatch/ })

  // Stuck in the driver: the process ignores the time-out's kill long enough,
  // and a child of its holds stdout open, so waiting for the pipes would never end.
  standIn(`sleep 600 & echo $! > '${pidFile}'; exec sleep 600`)
  await t.rejects(runNvidiaSmi(QUERY_ARGS, 300), { name: 'GpuQueryError', message: /did not answer within 300 ms/ }, 'it gives up instead of hanging')

  process.env.PATH = dir + '-nothing-here'
  await t.rejects(runNvidiaSmi(QUERY_ARGS, 10_000), { code: 'ENOENT' }, 'no nvidia-smi at all')
})

t.test('without nvidia-smi, FGMACHINE_GPUS indices declare GPUs by hand (UUIDs cannot be checked)', async (t) => {
  const enoent = Object.assign(new Error('nvidia-smi not found'), { code: 'ENOENT' })
  const { log } = sinkLog()
  t.same(await discoverGpus({ log, override: '0,1', nvidiaSmi: failing(enoent) }), [
    { index: 0, uuid: 'GPU-unknown-0', name: 'GPU 0' },
    { index: 1, uuid: 'GPU-unknown-1', name: 'GPU 1' },
  ])
  t.same(await discoverGpus({ log, override: 'GPU-abc', nvidiaSmi: failing(enoent) }), [])
})

t.test('FGMACHINE_GPUS syntax', async (t) => {
  t.equal(parseOverride(undefined), undefined)
  t.equal(parseOverride(' '), undefined)
  t.equal(parseOverride('NONE'), 'none')
  t.same(parseOverride('0, 2,GPU-1b2c-3d'), [0, 2, 'GPU-1b2c-3d'])
  t.throws(() => parseOverride('0,../x'), /FGMACHINE_GPUS must be "none" or a comma list of GPU indices or UUIDs.*not "..\/x"/)
})

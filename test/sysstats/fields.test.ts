import t from 'tap'
import { formatBytes, formatPercent, systemFields } from '../../src/sysstats/fields.js'
import { SystemSeries, type Totals } from '../../src/sysstats/series.js'

const MiB = 2 ** 20
const GiB = 2 ** 30

t.test('binary units, 3 significant digits', async (t) => {
  t.equal(formatBytes(1.21 * GiB), '1.21 GiB')
  t.equal(formatBytes(812 * MiB), '812 MiB')
  t.equal(formatBytes(80 * GiB), '80 GiB')
  t.equal(formatBytes(1.2 * GiB), '1.2 GiB')
  t.equal(formatBytes(1023 * MiB), '0.999 GiB', 'never "1020 MiB"')
  t.equal(formatBytes(999.9 * MiB), '0.976 GiB', 'nor "1000 MiB" after rounding')
  t.equal(formatBytes(512), '512 B')
  t.equal(formatBytes(0), '0 B')
  t.equal(formatBytes(3 * 1024 ** 4), '3 TiB')
  t.equal(formatPercent(87.4), '87')
  t.equal(formatPercent(3.44), '3.4')
  t.equal(formatPercent(0), '0')
})

t.test('no samples: no fields', async (t) => {
  t.strictSame(systemFields({ samples: 0, gpus: [] }), {})
  t.strictSame(systemFields(new SystemSeries().totals()), {})
})

t.test('CPU and memory only: no GPU fields', async (t) => {
  const f = systemFields({ samples: 10, cpu: { mean: 153.2, max: 398 }, mem: { mean: 0.9 * GiB, max: 1.21 * GiB }, gpus: [] })
  t.strictSame(f, {
    system_peak_memory: '1.21 GiB',
    system_mean_cpu: '153 % (1.5 cores)',
    system_peak_cpu: '398 % (4.0 cores)',
  })
  t.strictSame(systemFields({ samples: 3, mem: { mean: 700 * MiB, max: 812 * MiB }, gpus: [] }), { system_peak_memory: '812 MiB' }, 'no CPU readings: no CPU fields')
  t.strictSame(systemFields({ samples: 3, cpu: { mean: 3.4, max: 12 }, gpus: [] }), { system_mean_cpu: '3.4 % (0.03 cores)', system_peak_cpu: '12 % (0.1 cores)' })
  t.strictSame(systemFields({ samples: 3, gpus: [{ index: 0, memTotal: 81_920 }] }), {}, 'a GPU with only its total: nothing measured')
})

t.test('one GPU', async (t) => {
  const f = systemFields({
    samples: 100,
    cpu: { mean: 99.6, max: 101 },
    mem: { mean: GiB, max: 2 * GiB },
    gpus: [{ index: 3, util: { mean: 87.2, max: 100 }, mem: { mean: 9.1 * 1024, max: 10.2 * 1024 }, memTotal: 80 * 1024 }],
  })
  t.strictSame(f, {
    system_peak_memory: '2 GiB',
    system_mean_cpu: '100 % (1.0 cores)',
    system_peak_cpu: '101 % (1.0 cores)',
    system_gpu_util_mean: '87 %',
    system_gpu_util_peak: '100 %',
    system_gpu_memory_peak: '10.2 GiB of 80 GiB',
    system_gpu_memory_mean: '9.1 GiB of 80 GiB',
  })
  const noTotal = systemFields({ samples: 1, gpus: [{ index: 0, mem: { mean: 812, max: 812 } }] })
  t.strictSame(noTotal, { system_gpu_memory_peak: '812 MiB', system_gpu_memory_mean: '812 MiB' }, 'no total known: no "of"; no utilisation read: no utilisation fields')
})

t.test('two GPUs: the overall value, then each GPU', async (t) => {
  const f = systemFields({
    samples: 100,
    gpus: [
      { index: 0, util: { mean: 90, max: 100 }, mem: { mean: 7 * 1024, max: 9.8 * 1024 }, memTotal: 40 * 1024 },
      { index: 1, util: { mean: 78, max: 97 }, mem: { mean: 8 * 1024, max: 10.2 * 1024 }, memTotal: 80 * 1024 },
    ],
  })
  t.strictSame(f, {
    system_gpu_util_mean: '84 % (GPU 0: 90 %, GPU 1: 78 %)',
    system_gpu_util_peak: '100 % (GPU 0: 100 %, GPU 1: 97 %)',
    system_gpu_memory_peak: '10.2 GiB of 80 GiB (GPU 0: 9.8 GiB, GPU 1: 10.2 GiB)',
    system_gpu_memory_mean: '8 GiB of 80 GiB (GPU 0: 7 GiB, GPU 1: 8 GiB)',
  })
  const oneReads = systemFields({ samples: 5, gpus: [{ index: 0, memTotal: 100 }, { index: 1, util: { mean: 50, max: 60 } }] })
  t.strictSame(oneReads, { system_gpu_util_mean: '50 % (GPU 1: 50 %)', system_gpu_util_peak: '60 % (GPU 1: 60 %)' }, 'two GPUs, one read: it is named')
})

t.test('from a series: what was measured, nothing else', async (t) => {
  const s = new SystemSeries({ maxPoints: 4 })
  for (let i = 0; i < 20; i++) s.add({ t: i * 1000, memoryBytes: (i + 1) * 100 * MiB, gpus: [{ index: 0, utilPct: i % 2 ? 100 : 50 }] })
  const f = systemFields(s.totals() satisfies Totals)
  t.strictSame(f, { system_peak_memory: '1.95 GiB', system_gpu_util_mean: '75 %', system_gpu_util_peak: '100 %' })
})

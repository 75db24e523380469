import t from 'tap'
import { dockerAvailable, ensureBusyboxImage } from '../helpers/images.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'
import { useStandInNvidiaSmi } from '../helpers/stand-in-gpus.js'

if (!dockerAvailable()) throw new Error('integration tests need a Docker engine: run them through `bash .ci/run`, or start dockerd')
const image = ensureBusyboxImage()
// Two H100s at work, as nvidia-smi on PATH lists them; dockerd has the stub NVIDIA hook (.ci/run).
useStandInNvidiaSmi('h100x2-busy.csv')

/**
 * About 3 s of work: 48 MiB in /dev/shm (tmpfs pages count as the container's memory, and
 * are not page cache Docker leaves out), and a shell kept busy.
 */
const WORK = 'dd if=/dev/zero of=/dev/shm/held bs=1M count=48 2>/dev/null; end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do :; done; rm /dev/shm/held; echo done'

const MIB = 1024 * 1024

/** "48.3 MiB", "1.2 GiB" → bytes. */
function bytesOf(text: unknown): number {
  const m = /^([\d.]+) (B|KiB|MiB|GiB)$/.exec(String(text))
  if (!m) throw new Error(`not a size: ${String(text)}`)
  return Number(m[1]) * { B: 1, KiB: 1024, MiB: MIB, GiB: 1024 * MIB }[m[2] as 'B']
}

async function runOne(h: Harness, project: string): Promise<{ fields: Record<string, unknown>; svg?: { type: string; text: string } }> {
  const id = objectId()
  t.equal((await h.submit(project, { _id: id })).status, 200)
  await h.fglab.waitFinished([id], 60_000)
  const e = h.fglab.experiment(id)
  const f = e.files.get('fgmachine-system.svg')
  return { fields: e.fields, svg: f && { type: f.type, text: f.data!.toString() } }
}

t.test("a container experiment's FGLab record gets its CPU and memory chart and readable fields", async (t) => {
  const h = await startHarness({
    config: { sampleMs: 500 },
    projects: (r) => ({ work: { image, command: 'sh', args: ['-c', WORK], capacity: 0.5, results: r, memory: '256m' } }),
  })
  t.teardown(() => h.close())
  const { fields, svg } = await runOne(h, 'work')
  t.equal(fields._status, 'success')
  t.ok(svg, 'fgmachine-system.svg reached FGLab')
  t.equal(svg!.type, 'image/svg+xml', 'as an image FGLab shows inline')
  t.match(svg!.text, /<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
  t.match(svg!.text, /CPU/)
  t.match(svg!.text, /Memory/)
  t.match(svg!.text, /<path d="M[\d.]+,[\d.]+l-?[\d.]+,-?[\d.]+/, 'curves drawn from several samples')
  t.notMatch(svg!.text, /GPU utilisation/i, 'no GPUs: no GPU panels')
  const peak = bytesOf(fields.system_peak_memory)
  t.ok(peak >= 40 * MIB && peak < 256 * MIB, `system_peak_memory ${String(fields.system_peak_memory)}: the 48 MiB it held, within its limit`)
  t.match(fields.system_mean_cpu, /^\d+(\.\d+)? % \([\d.]+ cores\)$/, `system_mean_cpu ${String(fields.system_mean_cpu)}`)
  t.ok(parseFloat(String(fields.system_peak_cpu)) > 20, `a busy shell shows (system_peak_cpu ${String(fields.system_peak_cpu)})`)
  t.notOk('system_gpu_util_mean' in fields)
})

t.test('GPU experiments: the series of their GPUs, from nvidia-smi', async (t) => {
  const h = await startHarness({
    config: { sampleMs: 500, gpus: undefined },
    projects: (r) => ({ gpu: { image, command: 'sh', args: ['-c', WORK], capacity: 0.5, gpu_capacity: 1, results: r } }),
  })
  t.teardown(() => h.close())
  const { fields, svg } = await runOne(h, 'gpu')
  t.equal(fields._status, 'success')
  t.equal(fields.system_gpu_util_mean, '87 %', 'its GPU (GPU 0), not the other one')
  t.equal(fields.system_gpu_util_peak, '87 %')
  t.equal(fields.system_gpu_memory_peak, '20 GiB of 79.6 GiB')
  t.match(svg!.text, /GPU utilisation/i)
  t.match(svg!.text, /GPU 0/)
  t.notMatch(svg!.text, /GPU 1\b/)
})

t.test('system_charts: false, and a local process sampled through its process tree', async (t) => {
  const h = await startHarness({
    config: { sampleMs: 500 },
    projects: (r) => ({
      off: { image, command: 'sh', args: ['-c', WORK], capacity: 0.5, results: r, system_charts: false },
      local: { command: 'sh', args: ['-c', 'end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do :; done'], capacity: 0.5, results: r },
    }),
  })
  t.teardown(() => h.close())
  const off = await runOne(h, 'off')
  t.equal(off.fields._status, 'success')
  t.notOk(off.svg, 'no chart')
  t.notOk('system_peak_memory' in off.fields, 'no fields')
  const local = await runOne(h, 'local')
  t.equal(local.fields._status, 'success')
  t.ok(local.svg, 'a local process gets its chart too')
  t.ok(bytesOf(local.fields.system_peak_memory) > 0, `system_peak_memory ${String(local.fields.system_peak_memory)}`)
  t.ok(parseFloat(String(local.fields.system_peak_cpu)) > 20, `system_peak_cpu ${String(local.fields.system_peak_cpu)}`)
})

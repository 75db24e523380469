import { pino } from 'pino'
import t from 'tap'
import WebSocket from 'ws'
import { buildApp } from '../../src/app.js'
import { LogHub } from '../../src/logs/log-hub.js'
import type { ProjectStore } from '../../src/projects/store.js'
import type { ExperimentManager } from '../../src/runner/experiment-manager.js'
import { Scheduler } from '../../src/scheduler/scheduler.js'
import { LogSink } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'

t.test('a late viewer gets a full backlog of escape-heavy output whole, and is not taken for a slow one', { timeout: 30_000 }, async (t) => {
  const hub = new LogHub()
  const id = objectId()
  // Coloured progress bars: every ESC and \r grows in JSON (\u001b is six bytes), so the
  // backlog, at its 4 MiB cap, is far more than 4 MiB on the wire.
  const line = `\x1b[32m${'\x1b[1m#\x1b[0m'.repeat(100)}\x1b[0m\r\n`
  const lines = Math.ceil((4 * 1024 * 1024) / Buffer.byteLength(line)) + 100
  for (let i = 0; i < lines; i++) hub.publish(id, i % 2 ? 'stdout' : 'stderr', line)
  const kept = hub.backlog(id).map((c) => c.text).join('')
  t.ok(kept.length >= 4 * 1024 * 1024 - line.length, 'the backlog is full')

  const logs = new LogSink()
  const app = await buildApp(
    {
      projects: { get: () => undefined } as unknown as ProjectStore,
      scheduler: new Scheduler(),
      experiments: {} as unknown as ExperimentManager,
      logHub: hub,
      machineUrl: 'http://machine:5081',
      machineId: () => 'm1',
      hostname: 'box',
      health: { docker: async () => undefined, fglab: async () => undefined },
    },
    { logger: pino({ level: 'debug' }, logs) },
  )
  t.teardown(() => app.close())
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const ws = new WebSocket(url.replace('http', 'ws') + '/')
  t.teardown(() => ws.terminate())
  await new Promise((resolve) => ws.once('open', resolve))
  let received = ''
  let closeCode: number | undefined
  let waiter: { length: number; resolve: () => void } | undefined
  ws.on('close', (code) => {
    closeCode = code
    waiter?.resolve()
  })
  const receivedAtLeast = (length: number) =>
    new Promise<void>((resolve) => {
      waiter = { length, resolve }
      if (received.length >= length) resolve()
    })
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString()) as Record<string, string>
    received += m.stdout ?? m.stderr ?? ''
    if (waiter && received.length >= waiter.length) waiter.resolve()
  })
  ws.send(`experiments:${id}`)
  await receivedAtLeast(kept.length)
  t.equal(closeCode, undefined, 'not closed as too slow')
  t.equal(received, kept, 'the whole backlog, in order')
  hub.publish(id, 'stdout', 'live\n')
  await receivedAtLeast(kept.length + 'live\n'.length)
  t.equal(received, kept + 'live\n', 'then live output')
  t.notOk(logs.find('closing a log viewer that fell behind'))
  t.equal(hub.stats(id)?.subscribers, 1, 'still subscribed')
})

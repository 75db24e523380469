import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { LogHub } from '../../src/logs/log-hub.js'
import { bareApp } from '../helpers/bare-app.js'
import type { LogSink } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'

/** The app on a free port with this hub, and a WebSocket viewer connected to it. */
async function viewer(t: Test, hub: LogHub): Promise<{ ws: WebSocket; logs: LogSink }> {
  const { app, logs } = await bareApp(hub)
  t.teardown(() => app.close())
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const ws = new WebSocket(url.replace('http', 'ws') + '/')
  t.teardown(() => ws.terminate())
  await new Promise((resolve) => ws.once('open', resolve))
  return { ws, logs }
}


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

  const { ws, logs } = await viewer(t, hub)
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

t.test('a viewer that never reads cannot make the backlog queue again and again by subscribing again', { timeout: 30_000 }, async (t) => {
  const hub = new LogHub()
  const id = objectId()
  const line = `${'x'.repeat(999)}\n`
  for (let i = 0; i < 4500; i++) hub.publish(id, 'stdout', line)
  const { ws, logs } = await viewer(t, hub)
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  // Stop reading: whatever the server sends stays queued on its side.
  const raw = (ws as unknown as { _socket: import('node:net').Socket })._socket
  raw.pause()
  for (let i = 0; i < 40; i++) {
    ws.send(`experiments:${id}`)
    await new Promise((r) => setTimeout(r, 20))
  }
  t.ok(logs.find('closing a log viewer that fell behind'), 'dropped at its second subscription, not queued forty backlogs')
  t.equal(hub.stats(id)?.subscribers, 0, 'and unsubscribed')
  raw.resume()
  t.equal(await closed, 1013)
})

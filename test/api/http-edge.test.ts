import net from 'node:net'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { HTTP_LIMITS, MAX_BODY_DEPTH, nestsDeeperThan, type HttpLimits } from '../../src/app.js'
import { LogHub } from '../../src/logs/log-hub.js'
import { bareApp } from '../helpers/bare-app.js'
import { objectId } from '../helpers/ids.js'

/** Short limits, so that what production does in tens of seconds happens here in one or two. */
const SHORT: HttpLimits = { headersTimeoutMs: 1000, requestTimeoutMs: 1500, checkEveryMs: 200, idleTimeoutMs: 1000, keepAliveTimeoutMs: 500, maxConnections: 1000 }

/** The app (no domain behind it but the log hub) listening on a free port. */
async function listening(t: Test, http: Partial<HttpLimits>) {
  const hub = new LogHub()
  const { app, logs } = await bareApp(hub, http)
  t.teardown(() => app.close())
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, url, port: Number(new URL(url).port), hub, logs }
}

/** A raw connection; resolves with what the server sent and when it closed the connection (ms after `connected`). */
function connect(t: Test, port: number) {
  const socket = net.connect(port, '127.0.0.1')
  let received = ''
  socket.on('data', (d: Buffer) => (received += d.toString()))
  socket.on('error', () => {})
  const opened = new Promise<number>((resolve) => socket.once('connect', () => resolve(Date.now())))
  const closed = opened.then((at) => new Promise<{ afterMs: number; received: string }>((resolve) => socket.once('close', () => resolve({ afterMs: Date.now() - at, received }))))
  t.teardown(() => socket.destroy())
  return { socket, opened, closed }
}

/** Settles with what `p` gave, or rejects once `ms` have passed. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)))
  return Promise.race([p, late]).finally(() => clearTimeout(timer))
}

t.test('the production limits close a slow-loris within a minute, and leave a slow but honest client time', async (t) => {
  t.ok(HTTP_LIMITS.headersTimeoutMs + HTTP_LIMITS.checkEveryMs <= 60_000, 'headers: closed within a minute')
  t.ok(HTTP_LIMITS.requestTimeoutMs + HTTP_LIMITS.checkEveryMs <= 60_000, 'a body sent byte by byte: closed within a minute')
  t.ok(HTTP_LIMITS.idleTimeoutMs <= 60_000, 'a connection that sends nothing: closed within a minute')
  t.ok(HTTP_LIMITS.headersTimeoutMs <= HTTP_LIMITS.requestTimeoutMs, 'Node wants the header limit within the request limit')
  t.ok(HTTP_LIMITS.headersTimeoutMs >= 10_000, 'headers get seconds, not milliseconds (a slow link, a loaded FGLab)')
  t.ok((256 * 1024) / (HTTP_LIMITS.requestTimeoutMs / 1000) < 8 * 1024, 'a 256 KiB body needs under 8 KB/s')
  t.ok(HTTP_LIMITS.maxConnections >= 100, 'room for a lab of open FGLab pages')
})

t.test('a slow-loris (one header line now and then) gets 408 and is closed at the header limit', async (t) => {
  const { port, url } = await listening(t, SHORT)
  const { socket, opened, closed } = connect(t, port)
  await opened
  socket.write('GET /health HTTP/1.1\r\nHost: machine\r\n')
  // A header line every 300 ms: never idle, never done.
  const drip = setInterval(() => socket.write(`X-Slow-${Date.now()}: 1\r\n`), 300)
  t.teardown(() => clearInterval(drip))
  const { afterMs, received } = await within(closed, 10_000, 'the slow-loris to be closed')
  clearInterval(drip)
  t.match(received, /^HTTP\/1\.1 408 /, 'answered 408 Request Timeout')
  t.ok(afterMs >= SHORT.headersTimeoutMs - 100, `not before the header limit (${afterMs} ms)`)
  t.ok(afterMs <= SHORT.headersTimeoutMs + SHORT.checkEveryMs + 1000, `soon after it (${afterMs} ms)`)
  t.equal((await fetch(url + '/health')).status, 200, 'an honest client is answered meanwhile')
})

t.test('a body sent a byte now and then is cut off at the request limit; a connection that sends nothing at the idle limit', async (t) => {
  const { port } = await listening(t, SHORT)
  const slow = connect(t, port)
  await slow.opened
  slow.socket.write('PUT /projects HTTP/1.1\r\nHost: machine\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{')
  const drip = setInterval(() => slow.socket.write(' '), 200)
  t.teardown(() => clearInterval(drip))
  const body = await within(slow.closed, 10_000, 'the slow body to be cut off')
  clearInterval(drip)
  t.match(body.received, /^HTTP\/1\.1 408 /)
  t.ok(body.afterMs <= SHORT.requestTimeoutMs + SHORT.checkEveryMs + 1000, `closed at the request limit (${body.afterMs} ms)`)

  const silent = connect(t, port)
  const idle = await within(silent.closed, 10_000, 'the silent connection to be closed')
  t.ok(idle.afterMs >= SHORT.idleTimeoutMs - 100 && idle.afterMs <= SHORT.idleTimeoutMs + 1000, `closed at the idle limit (${idle.afterMs} ms)`)
})

t.test("the FGLab page's WebSocket outlives every limit while nothing flows, and still gets output", async (t) => {
  const { url, hub } = await listening(t, SHORT)
  const ws = new WebSocket(url.replace('http', 'ws') + '/')
  t.teardown(() => ws.terminate())
  let closed: number | undefined
  ws.on('close', (code) => (closed = code))
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
  const id = objectId()
  ws.send(`experiments:${id}`)
  // Longer than all of them together: a page left open on an experiment that prints nothing.
  const quiet = SHORT.headersTimeoutMs + SHORT.requestTimeoutMs + SHORT.idleTimeoutMs + SHORT.keepAliveTimeoutMs
  await new Promise((resolve) => setTimeout(resolve, quiet))
  t.equal(closed, undefined, `still open after ${quiet} ms of silence`)
  const message = new Promise<string>((resolve) => ws.once('message', (d: Buffer) => resolve(d.toString())))
  hub.publish(id, 'stdout', 'epoch 1\n')
  t.same(JSON.parse(await within(message, 5000, 'the output')), { stdout: 'epoch 1\n' })
})

t.test('connections beyond the cap are closed at once, and said in the log', async (t) => {
  const { port, url, logs } = await listening(t, { ...SHORT, maxConnections: 2 })
  const held = [connect(t, port), connect(t, port)]
  await Promise.all(held.map((c) => c.opened))
  // Accepted in the order they came: these two are counted before the next.
  const third = await within(connect(t, port).closed, 5000, 'a third connection to be closed')
  t.equal(third.received, '', 'closed without an answer')
  t.ok(third.afterMs < SHORT.idleTimeoutMs, `at once (${third.afterMs} ms), not at a time limit`)
  await within(connect(t, port).closed, 5000, 'a fourth one to be closed too')
  t.ok(logs.find(/^2 connections are open: new ones are closed until some end$/), 'said')
  t.equal(logs.lines.filter((l) => /connections are open/.test(String(l.msg))).length, 1, 'once in a while, not at each')
  for (const c of held) c.socket.destroy()
  await Promise.all(held.map((c) => c.closed))
  t.equal((await fetch(url + '/health')).status, 200, 'served again once they are gone')
})

t.test('nestsDeeperThan counts { and [ on the text, not in strings', async (t) => {
  t.equal(nestsDeeperThan('{"a":{"b":[1]}}', 3), false)
  t.equal(nestsDeeperThan('{"a":{"b":[1]}}', 2), true)
  t.equal(nestsDeeperThan('{"a":"{{{{[[[["}', 1), false, 'brackets in strings do not count')
  t.equal(nestsDeeperThan('{"a":"\\"{{{{"}', 1), false, 'nor after an escaped quote')
  t.equal(nestsDeeperThan('[]'.repeat(1000), 1), false, 'siblings are not depth')
  t.equal(nestsDeeperThan('['.repeat(MAX_BODY_DEPTH) + ']'.repeat(MAX_BODY_DEPTH), MAX_BODY_DEPTH), false)
  t.equal(nestsDeeperThan('['.repeat(MAX_BODY_DEPTH + 1) + ']'.repeat(MAX_BODY_DEPTH + 1), MAX_BODY_DEPTH), true)
})

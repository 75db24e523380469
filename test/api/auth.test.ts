import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { requestToken, tokenMatches } from '../../src/api/auth.js'
import { buildApp } from '../../src/app.js'
import { ConfigError, loadConfig } from '../../src/config.js'
import { LogHub } from '../../src/logs/log-hub.js'
import { ProjectStore } from '../../src/projects/store.js'
import type { ExperimentManager } from '../../src/runner/experiment-manager.js'
import { Scheduler } from '../../src/scheduler/scheduler.js'
import { LogSink } from '../helpers/harness.js'
import { objectId } from '../helpers/ids.js'

const TOKEN = 's3cret-Token_0123456789'

interface Rig {
  app: FastifyInstance
  /** What reached the domain: 'start <project>', 'kill <id>', 'reset', 'template <id>'. */
  calls: string[]
  logs: LogSink
}

/** buildApp with a real ProjectStore (temp projects.json), Scheduler and LogHub, and an ExperimentManager that only records. */
async function rig(t: Test, token: string | undefined): Promise<Rig> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-auth-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'projects.json')
  writeFileSync(file, JSON.stringify({ p: { command: 'true', capacity: 0.5, results: path.join(dir, 'results') } }))
  const logs = new LogSink()
  const log = pino({ level: 'debug' }, logs)
  const projects = new ProjectStore(file, log, dir)
  await projects.reload()
  const calls: string[] = []
  const projectsAdd = projects.addTemplate.bind(projects)
  projects.addTemplate = async (id: string) => {
    calls.push(`template ${id}`)
    return projectsAdd(id)
  }
  const experiments = {
    refusal: () => undefined,
    start(projectId: string) {
      calls.push(`start ${projectId}`)
      return {}
    },
    kill(id: string) {
      calls.push(`kill ${id}`)
      return {}
    },
    resetCapacity() {
      calls.push('reset')
      return { released: [], held: [] }
    },
  } as unknown as ExperimentManager
  const app = await buildApp(
    {
      projects,
      scheduler: new Scheduler(),
      experiments,
      logHub: new LogHub(),
      machineUrl: 'http://machine:5081',
      machineId: () => 'm1',
      hostname: () => 'box',
      health: { docker: async () => undefined, fglab: async () => undefined },
    },
    { logger: log, token },
  )
  t.teardown(() => app.close())
  return { app, calls, logs }
}

/** The four calls that change something, each with a body that the route accepts. */
const MUTATING = (id: string) => [
  { method: 'POST' as const, url: '/projects/p', payload: { seed: 1, _id: id }, reaches: 'start p' },
  { method: 'PUT' as const, url: '/projects', payload: { project_id: 'newproj' }, reaches: 'template newproj' },
  { method: 'POST' as const, url: `/experiments/${id}/kill`, reaches: `kill ${id}` },
  { method: 'POST' as const, url: '/capacity/reset', reaches: 'reset' },
]

t.test('without FGMACHINE_TOKEN nothing needs a token (the default: an unchanged FGLab sends none)', async (t) => {
  const { app, calls } = await rig(t, undefined)
  const id = objectId()
  for (const c of MUTATING(id)) {
    const res = await app.inject({ method: c.method, url: c.url, payload: c.payload })
    t.equal(res.statusCode, 200, `${c.method} ${c.url}`)
  }
  t.same(calls, MUTATING(id).map((c) => c.reaches))
})

t.test('with FGMACHINE_TOKEN every call that changes something needs it', async (t) => {
  const { app, calls, logs } = await rig(t, TOKEN)
  const id = objectId()
  const refused: Array<Record<string, string>> = [
    {},
    { authorization: 'Bearer wrong' },
    { authorization: `Bearer ${TOKEN}x` },
    { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
    { authorization: `Basic ${Buffer.from(`user:${TOKEN}`).toString('base64')}` },
    { authorization: TOKEN },
    { authorization: `Bearer ${TOKEN} extra` },
    { 'x-fgmachine-token': 'wrong' },
    { 'x-fgmachine-token': '' },
    { 'x-fgmachine-token': TOKEN.toUpperCase() },
  ]
  for (const c of MUTATING(id)) {
    for (const headers of refused) {
      const res = await app.inject({ method: c.method, url: c.url, payload: c.payload, headers })
      t.equal(res.statusCode, 401, `${c.method} ${c.url} with ${JSON.stringify(headers)}`)
      t.match(res.json(), { error: /FGMACHINE_TOKEN/ })
      t.equal(res.headers['www-authenticate'], 'Bearer realm="fgmachine"')
    }
  }
  t.same(calls, [], 'no refused call reached the domain')
  t.ok(logs.find('refused a call without a valid FGMACHINE_TOKEN'), 'refusals are logged')
  t.notOk(JSON.stringify(logs.lines).includes(TOKEN), 'the token is never logged')

  const accepted: Array<Record<string, string>> = [
    { authorization: `Bearer ${TOKEN}` },
    { authorization: `bearer ${TOKEN}` },
    { authorization: `Bearer  ${TOKEN} ` },
    { 'x-fgmachine-token': TOKEN },
    // A wrong Authorization (FGLab's basic auth passed on by a proxy, say) does not hide a right X-FGMachine-Token.
    { authorization: 'Basic dXNlcjpwYXNz', 'x-fgmachine-token': TOKEN },
  ]
  for (const headers of accepted) {
    calls.length = 0
    for (const c of MUTATING(objectId())) {
      const res = await app.inject({ method: c.method, url: c.url, payload: c.payload, headers })
      t.equal(res.statusCode, 200, `${c.method} ${c.url} with ${Object.keys(headers).join('+')}`)
    }
    t.equal(calls.length, 4, 'each reached the domain')
  }
})

t.test('the token is checked before the body is read', async (t) => {
  const { app } = await rig(t, TOKEN)
  let res = await app.inject({ method: 'POST', url: '/projects/p', payload: '{"seed": ', headers: { 'content-type': 'application/json' } })
  t.equal(res.statusCode, 401, 'malformed JSON without a token: 401, not 400')
  res = await app.inject({ method: 'POST', url: '/projects/p', payload: 'x'.repeat(300 * 1024), headers: { 'content-type': 'application/json' } })
  t.equal(res.statusCode, 401, 'an oversized body without a token: 401, not 413')
  res = await app.inject({ method: 'POST', url: '/no/such/route' })
  t.equal(res.statusCode, 401, 'unknown POST routes say nothing without a token')
  res = await app.inject({ method: 'POST', url: '/projects/p', payload: '{"seed": ', headers: { 'content-type': 'application/json', 'x-fgmachine-token': TOKEN } })
  t.equal(res.statusCode, 400, 'with the token the body is checked as before')
})

t.test('with FGMACHINE_TOKEN reads, the WebSocket and CORS preflights stay open', async (t) => {
  const { app, calls } = await rig(t, TOKEN)
  let res = await app.inject({ method: 'GET', url: '/projects/p/capacity' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { capacity: 2, address: 'http://machine:5081', _id: 'm1' })
  res = await app.inject({ method: 'GET', url: '/projects/unknown/capacity' })
  t.equal(res.statusCode, 501, 'capacity answers as before')
  res = await app.inject({ method: 'GET', url: '/gpus' })
  t.equal(res.statusCode, 200)
  res = await app.inject({ method: 'GET', url: '/health' })
  t.equal(res.statusCode, 200)
  res = await app.inject({ method: 'GET', url: '/' })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { name: 'fgmachine' })
  res = await app.inject({ method: 'HEAD', url: '/health' })
  t.equal(res.statusCode, 200)

  for (const [method, url] of [
    ['POST', '/projects/p'],
    ['PUT', '/projects'],
    ['POST', `/experiments/${objectId()}/kill`],
    ['POST', '/capacity/reset'],
  ]) {
    res = await app.inject({
      method: 'OPTIONS',
      url: url!,
      headers: { origin: 'http://fglab:5080', 'access-control-request-method': method!, 'access-control-request-headers': 'content-type, authorization, x-fgmachine-token' },
    })
    t.equal(res.statusCode, 204, `preflight for ${method} ${url} answered without a token`)
    t.equal(res.headers['access-control-allow-origin'], '*')
    t.match(String(res.headers['access-control-allow-methods']), new RegExp(method!))
    const allowed = String(res.headers['access-control-allow-headers']).toLowerCase()
    t.match(allowed, /authorization/, 'Authorization may be sent cross-origin')
    t.match(allowed, /x-fgmachine-token/, 'X-FGMachine-Token may be sent cross-origin')
  }

  res = await app.inject({ method: 'POST', url: '/capacity/reset', headers: { origin: 'http://fglab:5080' } })
  t.equal(res.statusCode, 401)
  t.equal(res.headers['access-control-allow-origin'], '*', 'a 401 carries CORS headers, so the page can read why')
  t.same(calls, [])

  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const ws = new WebSocket(url.replace('http', 'ws') + '/')
  t.teardown(() => ws.terminate())
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  t.equal(ws.readyState, WebSocket.OPEN, 'the WebSocket (the "online" light) opens without a token')
})

t.test('tokenMatches and requestToken', async (t) => {
  t.ok(tokenMatches('abc', 'abc'))
  t.notOk(tokenMatches('abd', 'abc'))
  t.notOk(tokenMatches('ab', 'abc'), 'a prefix does not match')
  t.notOk(tokenMatches('abcd', 'abc'), 'a longer one does not match')
  t.notOk(tokenMatches('', 'abc'))
  t.notOk(tokenMatches(undefined, 'abc'))
  t.equal(requestToken({ headers: { authorization: 'Bearer t1' } }), 't1')
  t.equal(requestToken({ headers: { authorization: 'BEARER t1' } }), 't1')
  t.equal(requestToken({ headers: { 'x-fgmachine-token': 't2' } }), 't2')
  t.equal(requestToken({ headers: { authorization: 'Bearer t1', 'x-fgmachine-token': 't2' } }), 't1', 'Authorization first')
  t.equal(requestToken({ headers: { authorization: 'Basic abc' } }), undefined)
  t.equal(requestToken({ headers: {} }), undefined)
})

t.test('FGMACHINE_TOKEN in the configuration', async (t) => {
  const BASE = { FGLAB_URL: 'http://fglab:5080', FGMACHINE_URL: 'http://box:5081' }
  t.equal(loadConfig(BASE, '/srv').token, undefined, 'off by default')
  t.equal(loadConfig({ ...BASE, FGMACHINE_TOKEN: '' }, '/srv').token, undefined, 'empty is unset')
  t.equal(loadConfig({ ...BASE, FGMACHINE_TOKEN: ` ${TOKEN}\n` }, '/srv').token, TOKEN, 'trimmed')
  for (const bad of ['two words', 'tøken', 'tab\there']) {
    let err: unknown
    try {
      loadConfig({ ...BASE, FGMACHINE_TOKEN: bad }, '/srv')
    } catch (e) {
      err = e
    }
    t.ok(err instanceof ConfigError, `${JSON.stringify(bad)} is refused`)
    t.match((err as ConfigError | undefined)?.problems, [/^FGMACHINE_TOKEN must be printable ASCII/], 'one problem, naming the variable')
  }
})

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { ConfigError, loadConfig, loadDotEnv, loadTemplate } from '../src/config.js'

const CWD = path.join(tmpdir(), 'fgm-config-cwd')
const BASE = { FGLAB_URL: 'http://fglab.example:5080', FGMACHINE_URL: 'http://gpu-box-1:5081' }

/** The problems loadConfig reports for this environment (fails the test if it does not throw). */
function problems(t: Test, env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(env, CWD)
  } catch (err) {
    t.type(err, ConfigError)
    const e = err as ConfigError
    t.equal(e.code, 'FGM_CONFIG')
    for (const p of e.problems) t.match(e.message, p, 'the message lists every problem')
    return e.problems
  }
  t.fail('loadConfig accepted a bad environment')
  return []
}

const FGLAB_MISSING = 'FGLAB_URL is required: set it to the FGLab server, e.g. http://fglab.example:5080'
const MACHINE_MISSING = 'FGMACHINE_URL is required: set it to the address FGLab and browsers use to reach this machine, e.g. http://gpu-box-1:5081'
const PORT_BAD = 'PORT must be a port number (1-65535)'

t.test('a good environment', async (t) => {
  const c = loadConfig({ ...BASE }, CWD)
  t.equal(c.fglabUrl, 'http://fglab.example:5080')
  t.equal(c.machineUrl, 'http://gpu-box-1:5081')
  t.equal(c.host, '0.0.0.0')
  t.equal(c.port, 5081, 'the port comes from FGMACHINE_URL')
  t.equal(c.projectsPath, path.join(CWD, 'projects.json'))
  t.equal(c.dataDir, CWD)
  t.equal(c.logLevel, 'info')
  t.equal(c.killGraceMs, 10_000)
  t.equal(c.dockerHost, undefined)
})

t.test('missing URLs are named, each with what to set', async (t) => {
  t.strictSame(problems(t, {}), [FGLAB_MISSING, MACHINE_MISSING])
  t.strictSame(problems(t, { FGMACHINE_URL: BASE.FGMACHINE_URL }), [FGLAB_MISSING])
  t.strictSame(problems(t, { FGLAB_URL: BASE.FGLAB_URL }), [MACHINE_MISSING])
  t.strictSame(problems(t, { ...BASE, FGLAB_URL: '' }), [FGLAB_MISSING], 'an empty variable counts as missing')
})

t.test('a URL of blanks is reported once, as missing', async (t) => {
  t.strictSame(problems(t, { ...BASE, FGMACHINE_URL: '   ' }), [MACHINE_MISSING])
})

t.test('a malformed URL is named', async (t) => {
  for (const bad of ['fglab:5080', 'not a url', 'ftp://fglab.example:5080', '//fglab.example:5080']) {
    const [p, ...rest] = problems(t, { ...BASE, FGLAB_URL: bad })
    t.strictSame(rest, [], `${bad}: one problem`)
    t.match(p, /^FGLAB_URL must be an http\(s\) URL with host and port, e\.g\. .*http:\/\/fglab\.example:5080$/, bad)
  }
  const [p] = problems(t, { ...BASE, FGMACHINE_URL: 'gpu-box-1' })
  t.match(p, /^FGMACHINE_URL must be an http\(s\) URL/)
})

t.test('the malformed-URL message reads as one sentence', async (t) => {
  const [p] = problems(t, { ...BASE, FGLAB_URL: 'fglab:5080' })
  t.equal(p, 'FGLAB_URL must be an http(s) URL with host and port, e.g. http://fglab.example:5080')
})

t.test('a bad PORT is named', async (t) => {
  for (const bad of ['abc', '0', '70000', '1.5', '-1']) {
    t.strictSame(problems(t, { ...BASE, PORT: bad }), [PORT_BAD], `PORT=${bad}`)
  }
})

t.test('a bad LOG_LEVEL is named with the choices', async (t) => {
  t.strictSame(problems(t, { ...BASE, LOG_LEVEL: 'verbose' }), ['LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent'])
  t.equal(loadConfig({ ...BASE, LOG_LEVEL: 'debug' }, CWD).logLevel, 'debug')
})

t.test('a bad kill grace is named', async (t) => {
  const [p] = problems(t, { ...BASE, FGMACHINE_KILL_GRACE_S: '-3' })
  t.match(p, /^FGMACHINE_KILL_GRACE_S must be a number of seconds/)
  t.equal(loadConfig({ ...BASE, FGMACHINE_KILL_GRACE_S: '2.5' }, CWD).killGraceMs, 2500)
})

t.test('the system charts: sampling and chart intervals, each with its bounds named', async (t) => {
  const c = loadConfig(BASE, CWD)
  t.equal(c.sampleMs, 5000)
  t.equal(c.chartEveryMs, 1_800_000)
  t.equal(loadConfig({ ...BASE, FGMACHINE_SAMPLE_S: '0' }, CWD).sampleMs, 0, '0: no system charts')
  t.equal(loadConfig({ ...BASE, FGMACHINE_CHART_EVERY_S: '0' }, CWD).chartEveryMs, 0, '0: only at the end')
  t.match(problems(t, { ...BASE, FGMACHINE_SAMPLE_S: '0.01' })[0], /^FGMACHINE_SAMPLE_S must be at least 0.1 s/)
  t.match(problems(t, { ...BASE, FGMACHINE_SAMPLE_S: 'often' })[0], /^FGMACHINE_SAMPLE_S must be a number of seconds/)
  t.match(problems(t, { ...BASE, FGMACHINE_CHART_EVERY_S: '30' })[0], /^FGMACHINE_CHART_EVERY_S must be 0 \(the chart only at the end\) or at least 60 seconds/)
})

t.test('blank paths and host are named', async (t) => {
  for (const name of ['HOST', 'FGMACHINE_PROJECTS', 'FGMACHINE_DATA_DIR']) {
    const [p] = problems(t, { ...BASE, [name]: '   ' })
    t.match(p, new RegExp(`^${name} must be .*not blank$`), `${name} of blanks`)
  }
})

t.test('DOCKER_HOST: the docker CLI\'s forms, anything else named', async (t) => {
  for (const good of ['unix:///run/user/1000/docker.sock', '/var/run/docker.sock', 'tcp://10.0.0.5:2375', 'https://docker.example:2376', 'ssh://me@gpu-box']) {
    t.equal(loadConfig({ ...BASE, DOCKER_HOST: good }, CWD).dockerHost, good, good)
  }
  for (const bad of ['foo', 'tcp://', 'ftp://x:1']) {
    t.strictSame(problems(t, { ...BASE, DOCKER_HOST: bad }), [`DOCKER_HOST must be unix:///path/to/docker.sock, tcp://host:port or ssh://user@host, not "${bad}"`], bad)
  }
  const [p] = problems(t, { ...BASE, DOCKER_CERT_PATH: path.join(CWD, 'no-certs-here') })
  t.match(p, /^DOCKER_CERT_PATH .*no-certs-here lacks ca\.pem, cert\.pem, key\.pem/)
})

t.test('FGMACHINE_OUTBOX_MAX_MB', async (t) => {
  t.equal(loadConfig({ ...BASE }, CWD).outboxMaxBytes, 64 * 1024 * 1024, 'default 64 MiB')
  t.equal(loadConfig({ ...BASE, FGMACHINE_OUTBOX_MAX_MB: '0.5' }, CWD).outboxMaxBytes, 512 * 1024)
  const [p] = problems(t, { ...BASE, FGMACHINE_OUTBOX_MAX_MB: '0' })
  t.match(p, /^FGMACHINE_OUTBOX_MAX_MB must be a number of megabytes, more than 0/)
})

t.test('FGMACHINE_MAX_FILE_MB', async (t) => {
  t.equal(loadConfig({ ...BASE }, CWD).maxFileBytes, 8192 * 1024 * 1024, 'default 8 GiB')
  t.equal(loadConfig({ ...BASE, FGMACHINE_MAX_FILE_MB: '0.5' }, CWD).maxFileBytes, 512 * 1024)
  const [p] = problems(t, { ...BASE, FGMACHINE_MAX_FILE_MB: '0' })
  t.match(p, /^FGMACHINE_MAX_FILE_MB must be a number of megabytes, more than 0/)
})

t.test('every problem is reported at once', async (t) => {
  const ps = problems(t, { FGMACHINE_URL: 'nope', PORT: 'x', LOG_LEVEL: 'loud' })
  t.equal(ps.length, 4)
  t.ok(ps.includes(FGLAB_MISSING))
  t.ok(ps.includes(PORT_BAD))
  t.ok(ps.some((p) => p.startsWith('FGMACHINE_URL must be')))
  t.ok(ps.some((p) => p.startsWith('LOG_LEVEL must be')))
})

t.test('the port defaults from FGMACHINE_URL', async (t) => {
  t.equal(loadConfig({ ...BASE, FGMACHINE_URL: 'http://box:7000' }, CWD).port, 7000)
  t.equal(loadConfig({ ...BASE, FGMACHINE_URL: 'http://box:80' }, CWD).port, 80, 'port 80 when written')
  t.equal(loadConfig({ ...BASE, FGMACHINE_URL: 'http://user:pw@[::1]:7001/x' }, CWD).port, 7001)
  t.equal(loadConfig({ ...BASE, FGMACHINE_URL: 'https://box', PORT: '5081' }, CWD).port, 5081, 'behind a proxy: PORT says where to listen')
  for (const url of ['http://box', 'https://box/', 'http://[::1]']) {
    t.throws(() => loadConfig({ ...BASE, FGMACHINE_URL: url }, CWD), { message: /FGMACHINE_URL .* has no port, so FGLab and browsers would call port (80|443): write the port FGMachine listens on, e\.g\. https?:\/\/.*:5081/ }, url)
  }
})

t.test('HOST and PORT override', async (t) => {
  const c = loadConfig({ ...BASE, HOST: '127.0.0.1', PORT: '6001' }, CWD)
  t.equal(c.host, '127.0.0.1')
  t.equal(c.port, 6001)
  t.equal(c.machineUrl, 'http://gpu-box-1:5081', 'the advertised address is unchanged')
})

t.test("the Docker link's variables stand in for FGLAB_URL", async (t) => {
  const link = { FGLAB_PORT_5080_TCP_ADDR: '172.17.0.5', FGLAB_PORT_5080_TCP_PORT: '5080' }
  t.equal(loadConfig({ FGMACHINE_URL: BASE.FGMACHINE_URL, ...link }, CWD).fglabUrl, 'http://172.17.0.5:5080')
  t.equal(loadConfig({ FGMACHINE_URL: BASE.FGMACHINE_URL, ...link, FGLAB_PORT_5080_TCP_PORT: '6080' }, CWD).fglabUrl, 'http://172.17.0.5:6080')
  t.equal(loadConfig({ FGMACHINE_URL: BASE.FGMACHINE_URL, FGLAB_PORT_5080_TCP_ADDR: '172.17.0.5' }, CWD).fglabUrl, 'http://172.17.0.5:5080', 'port 5080 by default')
  t.equal(loadConfig({ ...BASE, ...link }, CWD).fglabUrl, 'http://fglab.example:5080', 'FGLAB_URL wins when set')
  t.equal(loadConfig({ ...BASE, FGLAB_URL: '', ...link }, CWD).fglabUrl, 'http://172.17.0.5:5080', 'an empty FGLAB_URL counts as unset')
})

t.test('relative paths resolve against cwd; absolute ones stay', async (t) => {
  const c = loadConfig({ ...BASE, FGMACHINE_PROJECTS: 'conf/projects.json', FGMACHINE_DATA_DIR: 'data' }, CWD)
  t.equal(c.projectsPath, path.join(CWD, 'conf', 'projects.json'))
  t.equal(c.dataDir, path.join(CWD, 'data'))
  const abs = loadConfig({ ...BASE, FGMACHINE_PROJECTS: '/etc/fgm/projects.json', FGMACHINE_DATA_DIR: '/var/lib/fgm' }, CWD)
  t.equal(abs.projectsPath, '/etc/fgm/projects.json')
  t.equal(abs.dataDir, '/var/lib/fgm')
})

t.test('trailing slashes are stripped', async (t) => {
  const c = loadConfig({ FGLAB_URL: 'http://user:pw@fglab.example:5080///', FGMACHINE_URL: ' http://gpu-box-1:5081/ ' }, CWD)
  t.equal(c.fglabUrl, 'http://user:pw@fglab.example:5080', 'credentials kept')
  t.equal(c.machineUrl, 'http://gpu-box-1:5081')
  t.equal(loadConfig({ ...BASE, FGLAB_URL: 'http://fglab.example:5080/lab/' }, CWD).fglabUrl, 'http://fglab.example:5080/lab')
})

t.test('loadDotEnv', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-dotenv-'))
  const keys = ['FGM_TEST_DOTENV_NEW', 'FGM_TEST_DOTENV_SET']
  t.teardown(() => {
    for (const k of keys) delete process.env[k]
    rmSync(dir, { recursive: true, force: true })
  })

  t.equal(loadDotEnv(dir), undefined, 'no .env: nothing loaded')

  writeFileSync(path.join(dir, '.env'), 'FGM_TEST_DOTENV_NEW=from-file\nFGM_TEST_DOTENV_SET=from-file\n')
  process.env.FGM_TEST_DOTENV_SET = 'from-process'
  t.equal(loadDotEnv(dir), path.join(dir, '.env'))
  t.equal(process.env.FGM_TEST_DOTENV_NEW, 'from-file', 'a new variable is loaded')
  t.equal(process.env.FGM_TEST_DOTENV_SET, 'from-process', 'a variable already set wins over the file')
})

t.test('FGMACHINE_TEMPLATE and FGMACHINE_GPUS', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fgm-template-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  t.equal(loadConfig({ ...BASE, FGMACHINE_TEMPLATE: 'conf/t.json' }, CWD).templatePath, path.join(CWD, 'conf/t.json'))
  t.equal(loadTemplate(undefined), undefined)
  writeFileSync(path.join(dir, 'ok.json'), '{"image": "x", "capacity": 0.5}')
  t.same(loadTemplate(path.join(dir, 'ok.json')), { image: 'x', capacity: 0.5 })
  writeFileSync(path.join(dir, 'bad.json'), '{"image": ')
  t.throws(() => loadTemplate(path.join(dir, 'bad.json')), { name: 'ConfigError', message: /FGMACHINE_TEMPLATE: cannot read .*bad\.json as JSON/ })
  writeFileSync(path.join(dir, 'array.json'), '[1]')
  t.throws(() => loadTemplate(path.join(dir, 'array.json')), { message: /FGMACHINE_TEMPLATE: .*array\.json must hold one projects\.json entry/ })
  t.throws(() => loadTemplate(path.join(dir, 'missing.json')), { message: /FGMACHINE_TEMPLATE: cannot read .*missing\.json/ })

  t.equal(loadConfig({ ...BASE, FGMACHINE_GPUS: '0,GPU-abc' }, CWD).gpus, '0,GPU-abc')
  t.throws(() => loadConfig({ ...BASE, FGMACHINE_GPUS: 'all' }, CWD), { message: /FGMACHINE_GPUS must be "none" or a comma list/ })
})

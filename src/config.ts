import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { z } from 'zod'
import { parseDockerHost } from './docker/docker-host.js'
import { parseOverride } from './gpu/discovery.js'

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** A required http(s) URL; exactly one problem per variable, saying what to set. */
const httpUrl = (name: string, what: string, example: string) =>
  z.string({ error: `${name} is required: set it to ${what}, e.g. ${example}` }).superRefine((raw, ctx) => {
    const v = raw.trim()
    if (v === '') {
      ctx.addIssue({ code: 'custom', message: `${name} is required: set it to ${what}, e.g. ${example}` })
      return
    }
    let ok: boolean
    try {
      const u = new URL(v)
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== ''
    } catch {
      ok = false
    }
    if (!ok) ctx.addIssue({ code: 'custom', message: `${name} must be an http(s) URL with host and port, e.g. ${example}` })
  })

const port = (name: string) =>
  z.coerce
    .number({ error: `${name} must be a port number (1-65535)` })
    .int(`${name} must be a port number (1-65535)`)
    .min(1, `${name} must be a port number (1-65535)`)
    .max(65535, `${name} must be a port number (1-65535)`)

/** An optional string that `parse` must accept; its error message (after `prefix`) is the problem. */
const checkedBy = (parse: (v: string | undefined) => unknown, prefix = '') =>
  z
    .string()
    .trim()
    .optional()
    .superRefine((v, ctx) => {
      try {
        parse(v)
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: prefix + (err as Error).message })
      }
    })

/** The environment, as FGMachine reads it. One schema, parsed once at start. */
const EnvSchema = z.object({
  FGLAB_URL: httpUrl('FGLAB_URL', 'the FGLab server', 'http://fglab.example:5080'),
  FGMACHINE_URL: httpUrl('FGMACHINE_URL', 'the address FGLab and browsers use to reach this machine', 'http://gpu-box-1:5081'),
  HOST: z.string().trim().min(1, 'HOST must be an address to listen on (default 0.0.0.0), not blank').default('0.0.0.0'),
  PORT: port('PORT').optional(),
  FGMACHINE_PROJECTS: z.string().trim().min(1, 'FGMACHINE_PROJECTS must be a path (default projects.json), not blank').default('projects.json'),
  FGMACHINE_DATA_DIR: z.string().trim().min(1, 'FGMACHINE_DATA_DIR must be a folder (default the working directory), not blank').default('.'),
  DOCKER_HOST: checkedBy(parseDockerHost, 'DOCKER_HOST '),
  DOCKER_CERT_PATH: z
    .string()
    .trim()
    .optional()
    .superRefine((v, ctx) => {
      const missing = v ? ['ca.pem', 'cert.pem', 'key.pem'].filter((f) => !existsSync(path.join(v, f))) : []
      if (missing.length) ctx.addIssue({ code: 'custom', message: `DOCKER_CERT_PATH ${v} lacks ${missing.join(', ')}: point it at the folder with the Docker client certificate` })
    }),
  LOG_LEVEL: z.enum(LOG_LEVELS, { error: `LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}` }).default('info'),
  FGMACHINE_GPUS: checkedBy(parseOverride),
  FGMACHINE_TEMPLATE: z.string().trim().optional(),
  FGMACHINE_PULL_STALL_S: z.coerce
    .number({ error: 'FGMACHINE_PULL_STALL_S must be a number of seconds' })
    .positive('FGMACHINE_PULL_STALL_S must be a number of seconds, more than 0')
    .default(300),
  FGMACHINE_OUTBOX_MAX_MB: z.coerce
    .number({ error: 'FGMACHINE_OUTBOX_MAX_MB must be a number of megabytes' })
    .positive('FGMACHINE_OUTBOX_MAX_MB must be a number of megabytes, more than 0')
    .default(64),
  FGMACHINE_MAX_FILE_MB: z.coerce
    .number({ error: 'FGMACHINE_MAX_FILE_MB must be a number of megabytes' })
    .positive('FGMACHINE_MAX_FILE_MB must be a number of megabytes, more than 0')
    .default(8192),
  FGMACHINE_KILL_GRACE_S: z.coerce
    .number({ error: 'FGMACHINE_KILL_GRACE_S must be a number of seconds' })
    .min(0, 'FGMACHINE_KILL_GRACE_S must be a number of seconds, 0 or more')
    .default(10),
  FGMACHINE_SAMPLE_S: z.coerce
    .number({ error: 'FGMACHINE_SAMPLE_S must be a number of seconds (0 turns the system charts off)' })
    .min(0, 'FGMACHINE_SAMPLE_S must be a number of seconds, 0 (system charts off) or more')
    .refine((s) => s === 0 || s >= 0.1, 'FGMACHINE_SAMPLE_S must be at least 0.1 s (or 0: system charts off)')
    .default(5),
  FGMACHINE_CHART_EVERY_S: z.coerce
    .number({ error: 'FGMACHINE_CHART_EVERY_S must be a number of seconds (0: the chart only at the end)' })
    .refine((s) => s === 0 || s >= 60, 'FGMACHINE_CHART_EVERY_S must be 0 (the chart only at the end) or at least 60 seconds: FGLab can fail a page that downloads a file while it is replaced')
    .default(1800),
  FGMACHINE_HOSTNAME: z.string().trim().min(1).optional(),
  FGMACHINE_TOKEN: z
    .string()
    .trim()
    .regex(/^[\x21-\x7e]+$/, 'FGMACHINE_TOKEN must be printable ASCII without spaces (it is sent in an HTTP header)')
    .optional(),
})

export interface Config {
  fglabUrl: string
  machineUrl: string
  host: string
  port: number
  projectsPath: string
  dataDir: string
  dockerHost: string | undefined
  logLevel: (typeof LOG_LEVELS)[number]
  killGraceMs: number
  /** FGMACHINE_GPUS as written: "none", indices/UUIDs, or undefined for every GPU nvidia-smi lists. */
  gpus: string | undefined
  /** FGMACHINE_TEMPLATE: a JSON file with the entry "Add to Machine" writes (default: the seed's blank one). */
  templatePath: string | undefined
  /** FGMACHINE_TOKEN: when set, POST and PUT calls need it (Authorization: Bearer, or X-FGMachine-Token). Off by default. */
  token: string | undefined
  /** An image pull that shows no progress for this long is cancelled. */
  pullStallMs: number
  /** Past this many bytes of reports waiting for FGLab, no new experiments are taken. */
  outboxMaxBytes: number
  /** Results files larger than this are not sent (the folder is kept, the experiment says why). */
  maxFileBytes: number
  /** FGMACHINE_HOSTNAME: the name FGLab shows for this machine (default: the host's name, also from inside a container). */
  hostname?: string
  /** FGMACHINE_SAMPLE_S: how often a running experiment's CPU, memory and GPUs are sampled (ms); 0: no system charts. */
  sampleMs: number
  /** FGMACHINE_CHART_EVERY_S: how often a running experiment's system chart is sent to FGLab (ms); 0: only at its end. */
  chartEveryMs: number
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  readonly code = 'FGM_CONFIG'
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`)
  }
}

/**
 * The seed's Docker-link variables: a container linked to FGLab as `fglab`
 * gets FGLAB_PORT_5080_TCP_ADDR/_PORT, which the original used when FGLAB_URL
 * was unset.
 */
function linkedFglabUrl(env: NodeJS.ProcessEnv): string | undefined {
  const addr = env.FGLAB_PORT_5080_TCP_ADDR
  if (!addr) return undefined
  return `http://${addr}:${env.FGLAB_PORT_5080_TCP_PORT ?? '5080'}`
}

/**
 * The port to listen on: PORT, else the one written in FGMACHINE_URL. A URL
 * without one would mean listening on 80: almost never what was meant.
 */
function listenPort(raw: string, url: URL, port: number | undefined): number {
  if (port !== undefined) return port
  const written = /^[a-z]+:\/\/(?:[^@/]*@)?(?:\[[^\]]*\]|[^:/]*):(\d+)/i.exec(raw)
  if (written) return Number(written[1])
  const fallback = url.protocol === 'https:' ? 443 : 80
  throw new ConfigError([
    `FGMACHINE_URL ${raw} has no port, so FGLab and browsers would call port ${fallback}: write the port FGMachine listens on, e.g. ${url.protocol}//${url.host}:5081` +
      ` (behind a proxy that serves port ${fallback}, also set PORT to the port FGMachine itself listens on)`,
  ])
}

/** Parse and validate the environment; throws ConfigError naming each bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Config {
  const input = { ...env }
  if (!input.FGLAB_URL) input.FGLAB_URL = linkedFglabUrl(env)
  for (const key of Object.keys(input)) if (input[key] === '') delete input[key]
  const parsed = EnvSchema.safeParse(input)
  if (!parsed.success) {
    // Each message names its variable; zod's own (e.g. "Too small") get the name put in front.
    throw new ConfigError(
      parsed.error.issues.map((i) => {
        const name = String(i.path[0] ?? '')
        return !name || i.message.startsWith(name) ? i.message : `${name}: ${i.message}`
      }),
    )
  }
  const e = parsed.data
  const machineUrl = new URL(e.FGMACHINE_URL.trim())
  return {
    fglabUrl: e.FGLAB_URL.trim().replace(/\/+$/, ''),
    machineUrl: e.FGMACHINE_URL.trim().replace(/\/+$/, ''),
    host: e.HOST,
    port: listenPort(e.FGMACHINE_URL.trim(), machineUrl, e.PORT),
    projectsPath: path.resolve(cwd, e.FGMACHINE_PROJECTS),
    dataDir: path.resolve(cwd, e.FGMACHINE_DATA_DIR),
    dockerHost: e.DOCKER_HOST,
    logLevel: e.LOG_LEVEL,
    killGraceMs: Math.round(e.FGMACHINE_KILL_GRACE_S * 1000),
    gpus: e.FGMACHINE_GPUS,
    templatePath: e.FGMACHINE_TEMPLATE ? path.resolve(cwd, e.FGMACHINE_TEMPLATE) : undefined,
    token: e.FGMACHINE_TOKEN,
    pullStallMs: Math.round(e.FGMACHINE_PULL_STALL_S * 1000),
    outboxMaxBytes: Math.round(e.FGMACHINE_OUTBOX_MAX_MB * 1024 * 1024),
    maxFileBytes: Math.round(e.FGMACHINE_MAX_FILE_MB * 1024 * 1024),
    hostname: e.FGMACHINE_HOSTNAME,
    sampleMs: Math.round(e.FGMACHINE_SAMPLE_S * 1000),
    chartEveryMs: Math.round(e.FGMACHINE_CHART_EVERY_S * 1000),
  }
}

/** Load `.env` from the working directory into process.env (variables already set win). */
export function loadDotEnv(cwd = process.cwd()): string | undefined {
  const file = path.join(cwd, '.env')
  if (!existsSync(file)) return undefined
  process.loadEnvFile(file)
  return file
}

/** Read FGMACHINE_TEMPLATE's file: a JSON object. Throws ConfigError naming the variable. */
export function loadTemplate(file: string | undefined): Record<string, unknown> | undefined {
  if (!file) return undefined
  let value: unknown
  try {
    value = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new ConfigError([`FGMACHINE_TEMPLATE: cannot read ${file} as JSON (${(err as Error).message})`])
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError([`FGMACHINE_TEMPLATE: ${file} must hold one projects.json entry (a JSON object)`])
  }
  return value as Record<string, unknown>
}

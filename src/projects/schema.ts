import path from 'node:path'
import { z } from 'zod'
import { imageReferenceProblem } from '../docker/image-ref.js'
import { parseBytes } from '../util/bytes.js'
import { didYouMean } from '../util/did-you-mean.js'
import { isProjectId } from '../util/ids.js'

export const OPTION_STYLES = ['plain', 'single-dash', 'double-dash', 'function'] as const
export type OptionStyle = (typeof OPTION_STYLES)[number]

/** Zod's message for a value of the wrong type, or "missing" when there is none. */
const typed = (what: string, expected: string) => (iss: { input?: unknown }) =>
  iss.input === undefined ? `${what} is missing: it must be ${expected}` : iss.input === '' ? `${what} is empty: it must be ${expected}` : `${what} must be ${expected}`

/** Numbers may come as strings, as in the seed's example (`"capacity": "0.5"`). */
const numeric = (what: string) =>
  z.preprocess(
    (v) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v),
    z.number({ error: typed(what, 'a number') }).refine(Number.isFinite, `${what} must be a finite number`),
  )

const flag = (what: string) => z.boolean({ error: `${what} must be true or false` })

const size = (what: string) =>
  z
    .union([z.string(), z.number()], { error: `${what} must be a size like "8g", "512m" or a number of bytes` })
    .transform((v, ctx) => {
      const bytes = parseBytes(v)
      if (bytes === undefined) {
        ctx.addIssue({ code: 'custom', message: `${what} must be a size like "8g", "512m" or a number of bytes` })
        return z.NEVER
      }
      return bytes
    })

const stringList = z
  .union([z.string(), z.array(z.union([z.string(), z.number(), z.boolean()]))], {
    error: 'args must be a string or an array of strings',
  })
  .transform((v) => (typeof v === 'string' ? (v === '' ? [] : [v]) : v.map(String)))

/** The limits `docker run --ulimit` knows. */
export const ULIMIT_NAMES = [
  'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack',
] as const

const ULIMIT_FORM = 'a number, "soft:hard", {"soft": n, "hard": n}, or -1 / "unlimited"'
const limit = (v: unknown): number | undefined =>
  v === 'unlimited' ? -1 : typeof v === 'number' && Number.isInteger(v) && v >= -1 ? v : typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? limit(Number(v)) : undefined

/** One ulimit: soft and hard. */
const ulimit = z.unknown().transform((v, ctx) => {
  let soft: unknown = v
  let hard: unknown = v
  if (typeof v === 'string' && v.includes(':')) [soft, hard] = v.split(':')
  else if (typeof v === 'object' && v !== null) {
    const extra = Object.keys(v).filter((k) => k !== 'soft' && k !== 'hard')
    if (extra.length) {
      const guess = didYouMean(extra[0]!, ['soft', 'hard'])
      ctx.addIssue({ code: 'custom', message: `unknown key "${extra[0]}"${guess ? `: did you mean "${guess}"?` : ': only "soft" and "hard"'}` })
      return z.NEVER
    }
    ;[soft, hard] = [(v as { soft?: unknown }).soft, (v as { hard?: unknown }).hard ?? (v as { soft?: unknown }).soft]
  }
  const s = limit(soft)
  const h = limit(hard)
  if (s === undefined || h === undefined) {
    ctx.addIssue({ code: 'custom', message: `must be ${ULIMIT_FORM}` })
    return z.NEVER
  }
  // -1 is unlimited: above every number.
  if (h !== -1 && (s === -1 || s > h)) {
    ctx.addIssue({ code: 'custom', message: `soft limit ${s === -1 ? 'unlimited' : s} is above the hard limit ${h}: the soft one must not exceed the hard one` })
    return z.NEVER
  }
  return { soft: s, hard: h }
})

export const IPC_MODES = ['private', 'shareable', 'host', 'none'] as const

/** Docker's own default for experiment containers' logs would grow without end: rotated at this size, this many files. */
export const DEFAULT_LOG = { max_size: 100 * 1024 * 1024, max_files: 3 }

const LogSchema = z.strictObject(
  {
    max_size: size('log.max_size')
      .refine((b) => b >= 1024 * 1024, 'log.max_size must be at least 1m (a log file rotated every few lines loses what the backlog needs)')
      .default(DEFAULT_LOG.max_size),
    max_files: numeric('log.max_files').refine((n) => Number.isInteger(n) && n >= 1, 'log.max_files must be a whole number, 1 or more').default(DEFAULT_LOG.max_files),
  },
  { error: (iss) => (iss.code === 'unrecognized_keys' ? undefined : 'log must be an object like {"max_size": "100m", "max_files": 3}') },
)

export const PULL_POLICIES = ['missing', 'always'] as const

const EntryObject = z.strictObject({
  command: z.string({ error: typed('command', 'a string') }).min(1, 'command must not be empty').optional(),
  args: stringList.default([]),
  options: z
    .enum(OPTION_STYLES, { error: `options must be one of ${OPTION_STYLES.join(', ')}` })
    .default('plain'),
  // The original passes booleans as values unless `boolean` is "optional".
  boolean: z.enum(['optional'], { error: 'boolean must be "optional" (true options as bare flags, false ones left out), or left out' }).optional(),
  capacity: numeric('capacity').refine((c) => c >= 0 && c <= 1, 'capacity must be in [0, 1], e.g. 0.5'),
  results: z.string({ error: typed('results', 'the folder experiments write into, e.g. "/data/results"') }).min(1, 'results must not be empty'),
  cwd: z.string({ error: typed('cwd', 'a folder') }).min(1, 'cwd must not be empty (leave it out for the default)').optional(),
  gpu_capacity: numeric('gpu_capacity')
    .refine((c) => c > 0 && (c <= 1 || Number.isInteger(c)), 'gpu_capacity must be in (0, 1] or a whole number of GPUs')
    .optional(),
  gpu_command: z.string({ error: typed('gpu_command', 'a string such as "--gpu"') }).optional(),
  keep_results: flag('keep_results').default(false),
  /** Sample the experiment's CPU, memory and GPUs, and send FGLab the chart fgmachine-system.svg and summary fields. */
  system_charts: flag('system_charts').default(true),
  /** Seconds of run time (not counting an image pull) before the experiment is stopped and reported fail. */
  timeout: numeric('timeout').refine((t) => t > 0, 'timeout must be a number of seconds, more than 0').optional(),
  // Container projects.
  image: z
    .string({ error: typed('image', 'an image name such as "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"') })
    .min(1, 'image must not be empty')
    .superRefine((v, ctx) => {
      const problem = imageReferenceProblem(v)
      if (problem) ctx.addIssue({ code: 'custom', message: problem })
    })
    .optional(),
  /** `missing`: pulled when not on this host; `always`: pulled (refreshed) before every experiment. */
  pull: z.enum(PULL_POLICIES, { error: `pull must be one of ${PULL_POLICIES.join(', ')}` }).default('missing'),
  /** Pull the image as soon as projects.json names it, so that the first experiment does not wait. */
  prepull: flag('prepull').default(false),
  volumes: z.array(z.string().min(1), { error: 'volumes must be an array of "host:container[:opts]" strings' }).default([]),
  env: z
    .record(z.string(), z.union([z.string(), z.number(), z.boolean()]), { error: 'env must be an object of strings' })
    .transform((e) => Object.fromEntries(Object.entries(e).map(([k, v]) => [k, String(v)])))
    .default({}),
  shm_size: size('shm_size').optional(),
  memory: size('memory').optional(),
  cpus: numeric('cpus').refine((c) => c > 0, 'cpus must be more than 0').optional(),
  network: z.string().min(1).optional(),
  user: z.string().min(1).optional(),
  /** Docker's init as the container's PID 1: signals reach the program, which may save on Kill. */
  init: flag('init').default(true),
  ipc: z
    .string({ error: 'ipc must be a string' })
    .refine((v) => (IPC_MODES as readonly string[]).includes(v) || /^container:.+/.test(v), `ipc must be one of ${IPC_MODES.join(', ')} or "container:<name>"`)
    .optional(),
  ulimits: z
    .record(z.string(), ulimit, { error: `ulimits must be an object like {"memlock": -1, "stack": 67108864}` })
    .superRefine((u, ctx) => {
      for (const name of Object.keys(u)) {
        if ((ULIMIT_NAMES as readonly string[]).includes(name)) continue
        const guess = didYouMean(name, ULIMIT_NAMES)
        ctx.addIssue({ code: 'custom', path: [name], message: `unknown ulimit "${name}"${guess ? `: did you mean "${guess}"?` : `; known: ${ULIMIT_NAMES.join(', ')}`}` })
      }
    })
    .optional(),
  log: LogSchema.default(DEFAULT_LOG),
})

/** What only a container can have: on a local project, a mistake to say, not a setting to ignore. */
const CONTAINER_ONLY = new Set(['pull', 'prepull', 'volumes', 'shm_size', 'memory', 'cpus', 'network', 'user', 'init', 'ipc', 'ulimits', 'log'])

/** The keys an entry may have, by where they are: for did-you-mean. */
const KNOWN_KEYS: Record<string, readonly string[]> = {
  '': Object.keys(EntryObject.shape),
  log: Object.keys(LogSchema.shape),
}

export const ProjectEntrySchema = EntryObject.superRefine((p, ctx) => {
  if (p.capacity === 0 && p.gpu_capacity === undefined) {
    ctx.addIssue({ code: 'custom', path: ['capacity'], message: 'capacity 0 (no limit from the machine) needs gpu_capacity to limit it instead' })
  }
  if (!p.image && p.command === undefined) {
    ctx.addIssue({ code: 'custom', path: ['command'], message: 'command is required for a local project (or set image to run it in a container)' })
  }
  if (p.gpu_capacity !== undefined && !p.gpu_command && !p.image) {
    // A local process can only learn its GPU from gpu_command.
    ctx.addIssue({ code: 'custom', path: ['gpu_command'], message: 'gpu_command is required with gpu_capacity for a local project' })
  }
})

/** Each problem of an entry, as "field: why", unknown keys with the key they were likely meant as. */
function entryProblems(error: z.ZodError): Array<{ field: string; message: string }> {
  const out: Array<{ field: string; message: string }> = []
  for (const issue of error.issues) {
    const where = issue.path.join('.')
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const guess = didYouMean(key, KNOWN_KEYS[where] ?? [])
        const field = where ? `${where}.${key}` : key
        out.push({ field, message: guess ? `unknown key "${key}": did you mean "${guess}"?` : `unknown key "${key}" (README: projects.json lists the keys)` })
      }
      continue
    }
    out.push({ field: where, message: issue.message })
  }
  return out
}

export type ProjectEntry = z.output<typeof ProjectEntrySchema>

/** A validated project, with paths resolved. */
export interface Project extends ProjectEntry {
  id: string
  /** Absolute results folder (without the experiment id). */
  resultsDir: string
  /** Absolute working directory for local processes. */
  workDir: string | undefined
}

export interface ProjectProblem {
  projectId: string
  field: string
  message: string
}

export interface ParsedProjects {
  projects: Map<string, Project>
  problems: ProjectProblem[]
}

/**
 * Validate a parsed projects.json. Each bad entry is reported and left out;
 * the good ones are returned. Relative paths are relative to `baseDir`
 * (FGMachine's directory, as in the original).
 */
export function parseProjects(raw: unknown, baseDir: string): ParsedProjects {
  const problems: ProjectProblem[] = []
  const projects = new Map<string, Project>()
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    problems.push({ projectId: '*', field: '', message: 'projects.json must hold an object keyed by FGLab project id' })
    return { projects, problems }
  }
  for (const [id, entry] of Object.entries(raw)) {
    if (!isProjectId(id)) {
      problems.push({ projectId: id, field: '', message: 'project id must be letters, digits, "_" or "-" (FGLab ids are 24 hex digits)' })
      continue
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      problems.push({ projectId: id, field: '', message: 'the entry must be an object of fields such as {"image": …, "capacity": 0.5, "results": …}' })
      continue
    }
    const r = ProjectEntrySchema.safeParse(entry)
    const local = r.success && !r.data.image ? Object.keys(entry).filter((k) => CONTAINER_ONLY.has(k)) : []
    for (const k of local) {
      problems.push({ projectId: id, field: k, message: `${k} is for container projects (with "image"): a local process cannot use it; remove it, or add "image"` })
    }
    if (!r.success) {
      for (const p of entryProblems(r.error)) problems.push({ projectId: id, ...p })
      continue
    }
    if (local.length) continue
    const p = r.data
    projects.set(id, {
      ...p,
      id,
      resultsDir: path.resolve(baseDir, p.results),
      workDir: p.image ? p.cwd : path.resolve(baseDir, p.cwd ?? '.'),
    })
  }
  return { projects, problems }
}

/** The seed's template, as the "Add to Machine" button adds it. */
export function projectTemplate(): Record<string, unknown> {
  // Left blank on purpose, as in the original: the entry is reported as
  // invalid (and offers no capacity) until the user fills it in.
  return { cwd: '', command: '', args: [], options: '', capacity: '', results: '' }
}

import path from 'node:path'
import { z } from 'zod'
import { parseBytes } from '../util/bytes.js'
import { isProjectId } from '../util/ids.js'

export const OPTION_STYLES = ['plain', 'single-dash', 'double-dash', 'function'] as const
export type OptionStyle = (typeof OPTION_STYLES)[number]

/** Numbers may come as strings, as in the seed's example (`"capacity": "0.5"`). */
const numeric = (what: string) =>
  z.preprocess(
    (v) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v),
    z.number({ error: `${what} must be a number` }).refine(Number.isFinite, `${what} must be a finite number`),
  )

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

export const ProjectEntrySchema = z
  .object({
    command: z.string().min(1, 'command must not be empty').optional(),
    args: stringList.default([]),
    options: z
      .enum(OPTION_STYLES, { error: `options must be one of ${OPTION_STYLES.join(', ')}` })
      .default('plain'),
    // The original passes booleans as values unless `boolean` is "optional".
    boolean: z.string().optional(),
    capacity: numeric('capacity').refine((c) => c >= 0 && c <= 1, 'capacity must be in [0, 1], e.g. 0.5'),
    results: z.string({ error: 'results is required: the folder experiments write into' }).min(1, 'results must not be empty'),
    cwd: z.string().min(1).optional(),
    gpu_capacity: numeric('gpu_capacity')
      .refine((c) => c > 0 && (c <= 1 || Number.isInteger(c)), 'gpu_capacity must be in (0, 1] or a whole number of GPUs')
      .optional(),
    gpu_command: z.string().optional(),
    keep_results: z.boolean({ error: 'keep_results must be true or false' }).default(false),
    /** Seconds of run time (not counting an image pull) before the experiment is stopped and reported fail. */
    timeout: numeric('timeout').refine((t) => t > 0, 'timeout must be a number of seconds, more than 0').optional(),
    // Container projects.
    image: z.string().min(1, 'image must not be empty').optional(),
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
  })
  .superRefine((p, ctx) => {
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
    const r = ProjectEntrySchema.safeParse(entry)
    if (!r.success) {
      for (const issue of r.error.issues) {
        problems.push({ projectId: id, field: issue.path.join('.'), message: issue.message })
      }
      continue
    }
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

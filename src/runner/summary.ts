import type { ExitInfo } from './runtime.js'

/** What FGLab shows of how an experiment ended: flat fields of strings, numbers and booleans, readable on its page. */
export type Summary = Record<string, string | number | boolean>

/** "850 ms", "12.3 s", "4 min 5 s", "3 h 2 min", "2 d 4 h": a run time as people say it. */
export function humanDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  const s = ms / 1000
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`
  const parts = (big: number, bigUnit: string, small: number, smallUnit: string) => `${big} ${bigUnit}${small ? ` ${small} ${smallUnit}` : ''}`
  const whole = Math.round(s)
  if (whole < 3600) return parts(Math.floor(whole / 60), 'min', whole % 60, 's')
  if (whole < 86_400) return parts(Math.floor(whole / 3600), 'h', Math.floor((whole % 3600) / 60), 'min')
  return parts(Math.floor(whole / 86_400), 'd', Math.floor((whole % 86_400) / 3600), 'h')
}

/** Whether FGLab is told `success`: it exited 0, and was neither killed nor stopped for its timeout. */
export function succeeded(exit: Pick<ExitInfo, 'exitCode' | 'timedOut'>, killed: boolean): boolean {
  return exit.exitCode === 0 && !killed && !exit.timedOut
}

/** Why it failed, in words; undefined when it succeeded. */
export function failureReason(exit: ExitInfo, killed: boolean): string | undefined {
  if (exit.error) return exit.error
  if (killed) return 'killed'
  if (exit.exitCode === 0) return undefined
  if (exit.exitCode !== null) return `exit code ${exit.exitCode}`
  return exit.signal ? `ended by ${exit.signal}` : 'ended abnormally'
}

/**
 * How it ended, as fields of the experiment: `FGMachine` (one sentence),
 * `exit_code`, `duration_s`, `reason`, and `killed`, `timed_out`,
 * `oom_killed`, `signal` when they apply. No objects: FGLab shows an object
 * field as "[object Object]".
 */
export function exitSummary(exit: ExitInfo, killed: boolean, launchedMs?: number): Summary {
  const s: Summary = {}
  const reason = failureReason(exit, killed)
  const ran = launchedMs !== undefined && exit.endedMs !== undefined ? Math.max(0, exit.endedMs - launchedMs) : undefined
  const code = exit.exitCode === null ? undefined : `exit code ${exit.exitCode}`
  const facts = [reason?.includes(code ?? '\0') ? undefined : code, ran === undefined ? undefined : `ran ${humanDuration(ran)}`].filter(Boolean).join(', ')
  s.FGMachine = reason === undefined ? `success: ${facts}` : `fail: ${reason}${facts ? ` (${facts})` : ''}`
  if (exit.exitCode !== null) s.exit_code = exit.exitCode
  if (ran !== undefined) s.duration_s = Math.round(ran / 100) / 10
  if (reason !== undefined) s.reason = reason
  if (killed) s.killed = true
  if (exit.timedOut) s.timed_out = true
  if (exit.oomKilled) s.oom_killed = true
  if (exit.signal) s.signal = exit.signal
  return s
}

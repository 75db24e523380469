import t from 'tap'
import { exitSummary, humanDuration } from '../../src/runner/summary.js'

t.test('humanDuration says a run time as people do', async (t) => {
  t.equal(humanDuration(850), '850 ms')
  t.equal(humanDuration(4_250), '4.3 s')
  t.equal(humanDuration(42_400), '42 s')
  t.equal(humanDuration(245_000), '4 min 5 s')
  t.equal(humanDuration(3 * 3600_000 + 120_000), '3 h 2 min')
  t.equal(humanDuration(3600_000), '1 h')
  t.equal(humanDuration(2 * 86_400_000 + 4 * 3600_000), '2 d 4 h')
})

t.test('exitSummary: flat, readable fields; nothing an object', async (t) => {
  const started = 1_000_000
  const cases = [
    [exitSummary({ exitCode: 0, endedMs: started + 12_300 }, false, started), { FGMachine: 'success: exit code 0, ran 12 s', exit_code: 0, duration_s: 12.3 }],
    [exitSummary({ exitCode: 2, endedMs: started + 1500 }, false, started), { FGMachine: 'fail: exit code 2 (ran 1.5 s)', exit_code: 2, duration_s: 1.5, reason: 'exit code 2' }],
    [
      exitSummary({ exitCode: 143, endedMs: started + 900 }, true, started),
      { FGMachine: 'fail: killed (exit code 143, ran 900 ms)', exit_code: 143, duration_s: 0.9, reason: 'killed', killed: true },
    ],
    [
      exitSummary({ exitCode: 143, timedOut: true, error: 'timed out after 60 s', endedMs: started + 61_000 }, false, started),
      { FGMachine: 'fail: timed out after 60 s (exit code 143, ran 1 min 1 s)', exit_code: 143, reason: 'timed out after 60 s', timed_out: true },
    ],
    [
      exitSummary({ exitCode: 137, oomKilled: true, error: 'out of memory: the container reached its memory limit and was killed' }, false, started),
      { FGMachine: 'fail: out of memory: the container reached its memory limit and was killed (exit code 137)', exit_code: 137, oom_killed: true },
    ],
    [exitSummary({ exitCode: null, error: 'failed to start: cannot pull image x: denied' }, false), { FGMachine: 'fail: failed to start: cannot pull image x: denied', reason: 'failed to start: cannot pull image x: denied' }],
    [exitSummary({ exitCode: null, signal: 'SIGSEGV', endedMs: started + 2000 }, false, started), { FGMachine: 'fail: ended by SIGSEGV (ran 2.0 s)', signal: 'SIGSEGV', reason: 'ended by SIGSEGV' }],
  ] as const
  for (const [got, want] of cases) {
    t.match(got, want)
    for (const [k, v] of Object.entries(got)) t.ok(['string', 'number', 'boolean'].includes(typeof v), `${k} is a string, number or boolean`)
  }
  t.notOk('exit_code' in exitSummary({ exitCode: null, error: 'x' }, false), 'no exit code when there is none (not null)')
  t.notOk('duration_s' in exitSummary({ exitCode: 0 }, false), 'no duration without a launch')
})

import { realSleep, type Sleep } from './retry.js'

/** Time, as an input: the runner's timeouts and waits take it, so tests can run them in no time. */
export interface Clock {
  now(): number
  sleep: Sleep
}

export const realClock: Clock = { now: Date.now, sleep: realSleep }

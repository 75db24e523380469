/** USER_HZ, the unit of /proc's times: 100 on every Linux architecture Node runs on. */
export const CLOCK_TICKS = 100

/**
 * The fields of a `/proc/<pid>/stat` line after the command name (which may
 * hold spaces and parentheses), from its state on: state [0], ppid [1],
 * pgrp [2], utime [11], stime [12], cutime [13], cstime [14], starttime [19]
 * (ticks since boot), rss [21] (pages). Undefined when it is no such line.
 */
export function procStatFields(text: string): string[] | undefined {
  const close = text.lastIndexOf(')')
  return close < 0 ? undefined : text.slice(close + 2).split(' ')
}

/**
 * Capacities are counted in integer units, so that 0.1 × 10 is exactly 1:
 * one machine (or one GPU) is UNIT units.
 */
export const UNIT = 1_000_000

/** A fraction in units: 0 is nothing; any other fraction, however small, at least one unit. */
export function toUnits(fraction: number): number {
  return fraction === 0 ? 0 : Math.max(1, Math.round(fraction * UNIT))
}

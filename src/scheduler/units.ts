/**
 * Capacities are counted in integer units, so that 0.1 × 10 is exactly 1:
 * one machine (or one GPU) is UNIT units.
 */
export const UNIT = 1_000_000

export function toUnits(fraction: number): number {
  return Math.max(1, Math.round(fraction * UNIT))
}

import type { Refusal } from '../scheduler/refusal.js'

/** Errors the API maps to docs/PROTOCOL.md's answers. */
/** 501 `{"error": "No capacity available", "cause": …, "reason": …}`: FGLab's answer, and why. */
export class NoCapacityError extends Error {
  override readonly name = 'NoCapacityError'
  readonly code = 'FGM_NO_CAPACITY'
  readonly statusCode = 501
  constructor(readonly refusal: Refusal) {
    // The exact text FGLab and the original use.
    super('No capacity available')
  }
}

export class BadRequestError extends Error {
  override readonly name = 'BadRequestError'
  readonly code = 'FGM_BAD_REQUEST'
  readonly statusCode = 400
}

export class ConflictError extends Error {
  override readonly name = 'ConflictError'
  readonly code = 'FGM_CONFLICT'
  readonly statusCode = 409
}

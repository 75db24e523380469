import { randomBytes } from 'node:crypto'

/** A fresh FGLab-style id (24 hex digits). */
export function objectId(): string {
  return randomBytes(12).toString('hex')
}

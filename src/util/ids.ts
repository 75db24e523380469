/** FGLab's ids are MongoDB ObjectIds: 24 hex digits. Anything else never reaches the file system. */
export const OBJECT_ID = /^[0-9a-f]{24}$/i

export function isObjectId(value: unknown): value is string {
  return typeof value === 'string' && OBJECT_ID.test(value)
}

/** Project ids are FGLab ObjectIds too; the original accepted any key, so we allow a safe superset. */
export const PROJECT_ID = /^[A-Za-z0-9_-]{1,64}$/

/** Names that mean something to every JavaScript object: never a project id. */
const RESERVED = new Set(['__proto__', 'constructor', 'prototype'])

export function isProjectId(value: unknown): value is string {
  return typeof value === 'string' && PROJECT_ID.test(value) && !RESERVED.has(value)
}

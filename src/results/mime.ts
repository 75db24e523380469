import { lookup } from 'mime-types'

/** MIME type by extension (mime-types, as the original FGMachine used); FGLab shows images and videos inline by it. */
export function mimeType(file: string): string {
  return lookup(file) || 'application/octet-stream'
}

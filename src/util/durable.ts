import { closeSync, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs'
import path from 'node:path'

/**
 * Replace `file` with `data` so that a crash, or a power cut, leaves either the
 * old file or the new one, whole: written to a temporary file, flushed to
 * disk, renamed over, and the rename itself flushed (the folder's entry).
 */
export function writeFileDurably(file: string, data: string): void {
  const tmp = `${file}.tmp`
  const fd = openSync(tmp, 'w')
  try {
    // writeFileSync on a descriptor writes until every byte is out (or throws, ENOSPC say).
    writeFileSync(fd, data)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, file)
  syncFolder(path.dirname(file))
}

/** Flush a folder's entries (a rename or a new file in it) to disk. */
export function syncFolder(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } catch (err) {
    // Some file systems cannot fsync a folder (EINVAL): their renames are as durable as they get.
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err
  } finally {
    closeSync(fd)
  }
}

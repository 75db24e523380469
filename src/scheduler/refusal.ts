/** Why this machine takes no (more) experiments of a project now. */
export type RefusalCause =
  | 'unknown_project'
  | 'invalid_entry'
  | 'no_gpus'
  | 'too_few_gpus'
  | 'full'
  | 'outbox_full'
  | 'shutting_down'
  /** The data folder is full (ENOSPC, EDQUOT): no experiment can be written down (src/util/disk.ts DiskHealth). */
  | 'disk_full'
  /** The data folder may not be written (EROFS, EACCES, EPERM). */
  | 'data_unwritable'
  /** Another FGMachine claims this machine's FGLab id (a copy of its specs.json). */
  | 'identity_conflict'

/** A refusal: its cause (for programs) and its reason (for people: what is wrong and how to fix it). */
export interface Refusal {
  cause: RefusalCause
  reason: string
}

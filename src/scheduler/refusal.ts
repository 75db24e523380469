/** Why this machine takes no (more) experiments of a project now. */
export type RefusalCause = 'unknown_project' | 'invalid_entry' | 'no_gpus' | 'too_few_gpus' | 'full' | 'outbox_full' | 'shutting_down'

/** A refusal: its cause (for programs) and its reason (for people: what is wrong and how to fix it). */
export interface Refusal {
  cause: RefusalCause
  reason: string
}

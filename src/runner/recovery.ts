import type { ContainerSummary } from '../docker/container-client.js'
import { LABELS, ownership, runFromLabels } from '../docker/labels.js'
import type { Outbox } from '../fglab/outbox.js'
import type { RunRecord } from './journal.js'
import type { RunContext } from './run-context.js'
import { retry } from '../util/retry.js'

/** What recovery needs of the manager. */
export interface RecoveryHost {
  ctx: RunContext
  outbox: Outbox
  /** Whether this experiment is this FGMachine's business already: running, left to remove, or just finished. */
  knows(id: string): boolean
  /** Make a run of this record and resume it. */
  takeUp(record: RunRecord): void
  /** Reported experiments whose container is still to be removed: experiment id → container id. */
  leftContainers: Map<string, string>
  /** Containers of another FGMachine that claims this machine's FGLab id were found (none: cleared). */
  claimedElsewhere(containers: ContainerSummary[]): void
}

/**
 * After a restart: every experiment the journal holds is taken up. Leases are
 * held again at once (so capacity answers are right from the first request);
 * containers are then looked up, running ones followed, ended ones finished.
 * Nothing is launched again.
 */
export async function recover(host: RecoveryHost): Promise<void> {
  const { journal, ledgers, scheduler, log } = host.ctx
  const records = await journal.loadAll()
  for (const record of records) {
    if (host.knows(record.id)) continue
    if (record.phase === 'done') {
      if (record.containerId) host.leftContainers.set(record.id, record.containerId)
      else await journal.remove(record.id).catch((err: Error) => log.warn({ experimentId: record.id, err: err.message }, 'cannot remove a finished record yet'))
      continue
    }
    if (record.runtime === 'docker' && (record.phase === 'accepted' || record.phase === 'launched')) scheduler.adopt(record.lease)
    host.takeUp(record)
  }
  if (records.length) log.info({ experiments: records.map((r) => `${r.id} (${r.runtime}, ${r.phase})`) }, 'taking up experiments from before the restart')
  // A ledger no record owns and no report needs: left by a crash just after its experiment was done.
  const owned = new Set(records.map((r) => r.id))
  for (const id of await ledgers.onDisk()) {
    if (owned.has(id) || host.outbox.pending(id) > 0) continue
    await ledgers.remove(id).catch((err: Error) => log.warn({ experimentId: id, err: err.message }, 'cannot remove a ledger left behind yet'))
  }
  // So are the system samples of an experiment done (a crash between its ledger's removal and theirs).
  await host.ctx.system?.sweep(owned)
}

/**
 * Docker's labels are the truth about what runs: a container labelled as this
 * machine's that the journal does not know (the data folder was lost, say) is
 * taken up from its labels alone. One whose labels do not make an experiment,
 * older than `graceMs`, is removed. Containers without our labels, or another
 * machine's, are never touched. Tries until Docker answers (or shutdown).
 */
export async function reconcile(host: RecoveryHost, machineId: string, graceMs: number): Promise<void> {
  const { runtimes, journal, scheduler, log, clock, shutdown } = host.ctx
  const docker = runtimes.docker
  let containers: ContainerSummary[]
  try {
    containers = await retry(
      async () => {
        // First, so that the list below no longer holds them.
        await removeLeftContainers(host)
        return docker.listOurs(machineId)
      },
      {
        baseMs: 1000,
        maxMs: 30_000,
        random: () => 1, // no jitter: 1 s, 2 s, 4 s… up to 30 s
        sleep: clock.sleep,
        signal: shutdown,
        retryable: () => true,
        onRetry: (err, attempt) => {
          if (attempt === 1) log.warn({ err: (err as Error).message }, 'cannot list containers yet; will try again')
        },
      },
    )
  } catch {
    return // shutting down
  }
  const foreign: ContainerSummary[] = []
  const dataKey = docker.dataKey()
  for (const c of containers) {
    const id = c.labels[LABELS.experiment]
    // Already this machine's (its journal had it): whatever its labels say.
    if (id && host.knows(id)) continue
    if (ownership(c.labels, machineId, dataKey) === 'foreign') {
      foreign.push(c)
      continue
    }
    const labelled = runFromLabels(c.labels)
    if (labelled) {
      // Created but never started counts as not launched; resume then sees how it stands.
      const record: RunRecord = { ...labelled, runtime: 'docker', phase: c.state === 'created' ? 'accepted' : 'launched', containerId: c.id }
      try {
        await journal.write(record)
      } catch (err) {
        log.error({ experimentId: record.id, err: (err as Error).message }, 'cannot write its record (disk full?); taken up at the next check')
        continue
      }
      if (host.knows(record.id)) continue
      if (record.phase === 'launched') scheduler.adopt(record.lease)
      host.takeUp(record)
      // Said once its record is written and its lease held again.
      const before = c.labels[LABELS.machine]
      if (before && before !== machineId) {
        log.warn(
          { experimentId: record.id, containerId: c.id.slice(0, 12), previousMachineId: before },
          `taking up a container this data folder started as FGLab machine ${before}, an id it no longer has (specs.json lost, or the machine deleted in FGLab): it is reported and removed as this machine's`,
        )
      } else log.warn({ experimentId: record.id, containerId: c.id.slice(0, 12) }, 'taking up a container of this machine from its labels (no journal record)')
    } else if (clock.now() - c.createdMs >= graceMs) {
      log.warn({ containerId: c.id.slice(0, 12), name: c.name, state: c.state }, 'removing a container of this machine that belongs to no experiment it knows')
      await docker.remove(c.id).catch((err: Error) => log.warn({ err: err.message }, 'could not remove it'))
    }
  }
  host.claimedElsewhere(foreign)
}

/** Containers of fully reported experiments whose removal failed: removed here, never taken up again. */
async function removeLeftContainers(host: RecoveryHost): Promise<void> {
  const { runtimes, journal, log } = host.ctx
  for (const [id, containerId] of host.leftContainers) {
    try {
      await runtimes.docker.remove(containerId)
      await journal.remove(id)
    } catch (err) {
      log.warn({ experimentId: id, err: (err as Error).message }, 'still cannot remove the container of a reported experiment; will try again')
      continue
    }
    host.leftContainers.delete(id)
    log.info({ experimentId: id, containerId: containerId.slice(0, 12) }, 'removed the container of a reported experiment')
  }
}

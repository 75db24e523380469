import pino from 'pino'
import { ConfigError, loadConfig, loadDotEnv } from './config.js'
import { createMachine, type Machine } from './machine.js'
import { DataLock, DataLockError, unwritable } from './util/data-lock.js'

/** The process: configuration, logger, listen, signals. */
async function main(): Promise<void> {
  const envFile = loadDotEnv()
  const configError = (err: unknown): never => {
    if (err instanceof ConfigError) {
      process.stderr.write(`fgmachine: ${err.message}\n(see .env.example for every variable)\n`)
      process.exit(78) // EX_CONFIG
    }
    throw err
  }
  let config
  try {
    config = loadConfig()
  } catch (err) {
    return configError(err)
  }
  const log = pino({
    level: config.logLevel,
    ...(process.stdout.isTTY ? { transport: { target: 'pino-pretty' } } : {}),
  })
  if (envFile) log.info({ envFile }, 'read .env')
  let machine: Machine | undefined
  let lock: DataLock | undefined
  let closing = false
  const shutdown = (signal: string) => {
    if (closing) return
    closing = true
    log.info({ signal }, 'shutting down: stopping experiments and sending their reports')
    // `docker stop` waits 10 s before SIGKILL; finish well inside it.
    const deadline = setTimeout(() => {
      log.warn('shutdown took too long; exiting')
      process.exit(1)
    }, 8000)
    deadline.unref()
    // Signalled while still starting (GPU discovery, say): nothing runs yet to look after.
    if (!machine) process.exit(0)
    machine.close().then(
      async () => {
        await lock?.release()
        process.exit(0)
      },
      (err: unknown) => {
        log.error({ err }, 'error while shutting down')
        process.exit(1)
      },
    )
  }
  // First of all: as a container's PID 1, a signal without a handler is ignored until Docker's SIGKILL.
  process.once('SIGTERM', () => shutdown('SIGTERM'))
  process.once('SIGINT', () => shutdown('SIGINT'))

  // One FGMachine per data folder: two would adopt, report and remove the same experiments.
  try {
    lock = await DataLock.acquire(config.dataDir, {
      onLost: (by) => {
        log.fatal({ dataDir: config.dataDir, by }, 'another FGMachine took over this data folder (this one was stopped for long?): exiting, so that only one acts on it')
        process.exit(75)
      },
    })
  } catch (err) {
    if (unwritable(err)) {
      // Running experiments need their reports more than the folder needs its lock: start, say so.
      log.error({ dataDir: config.dataDir, err: (err as Error).message }, 'cannot lock the data folder (full or read-only?): starting without the lock; make sure no other FGMachine uses this folder')
    } else {
      if (!(err instanceof DataLockError)) throw err
      log.fatal({ dataDir: config.dataDir }, err.message)
      process.stderr.write(`fgmachine: ${err.message}\n`)
      process.exit(75) // EX_TEMPFAIL
    }
  }
  if (lock) log.info({ dataDir: config.dataDir, lock: lock.file }, 'data folder locked for this FGMachine')

  try {
    machine = await createMachine(config, {
      log,
      onFatal: (err) => {
        log.fatal({ err }, 'cannot go on')
        process.exit(78)
      },
    })
  } catch (err) {
    return configError(err)
  }

  try {
    await machine.listen()
  } catch (err) {
    log.fatal({ err }, 'cannot start')
    process.exit(1)
  }
}

void main()

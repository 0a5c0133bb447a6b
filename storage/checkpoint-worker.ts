// The body of the checkpoint thread (storage/checkpointer.ts): its own connection to the
// database, copying the write-ahead log back into the file at a steady pace. The fsync this
// needs can take hundreds of milliseconds on a busy disk; here it never stalls a request.
// After each checkpoint it tells the main thread how far it got, so a long run of writes can
// pause until the log has been copied back whole (and can start over instead of growing).

import Database from 'better-sqlite3'
import { parentPort, workerData } from 'node:worker_threads'

interface Settings {
  path: string
  intervalMs: number
}

/** What the thread posts after each checkpoint: frames in the log, and of those copied back. */
export interface CheckpointReport {
  log: number
  checkpointed: number
}

function run(port: NonNullable<typeof parentPort>, s: Settings): void {
  const db = new Database(s.path, { fileMustExist: true })
  db.pragma('busy_timeout = 5000')
  const step = () => {
    try {
      // PASSIVE: copies what no reader still needs and never waits for anyone.
      const [r] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[]
      if (r) port.postMessage({ log: r.log, checkpointed: r.checkpointed } satisfies CheckpointReport)
    } catch (err) {
      port.postMessage({ error: (err as Error).message })
    }
  }
  let timer = setInterval(step, s.intervalMs)
  port.on('message', (m: unknown) => {
    if (m === 'now') {
      // Asked by a writer that is pausing for it: checkpoint at once, then keep the pace.
      clearInterval(timer)
      step()
      timer = setInterval(step, s.intervalMs)
      return
    }
    if (m !== 'stop') return
    clearInterval(timer)
    step()
    db.close()
    port.close()
  })
}

if (parentPort) run(parentPort, workerData as Settings)

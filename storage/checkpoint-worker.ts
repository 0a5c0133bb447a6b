// The body of the checkpoint thread (storage/checkpointer.ts): its own connection to the
// database, copying the write-ahead log back into the file at a steady pace. The fsync this
// needs can take hundreds of milliseconds on a busy disk; here it never stalls a request.

import Database from 'better-sqlite3'
import { parentPort, workerData } from 'node:worker_threads'

interface Settings {
  path: string
  intervalMs: number
}

function run(port: NonNullable<typeof parentPort>, s: Settings): void {
  const db = new Database(s.path, { fileMustExist: true })
  db.pragma('busy_timeout = 5000')
  const step = () => {
    try {
      // PASSIVE: copies what no reader still needs and never waits for anyone.
      db.pragma('wal_checkpoint(PASSIVE)')
    } catch (err) {
      port.postMessage({ error: (err as Error).message })
    }
  }
  const timer = setInterval(step, s.intervalMs)
  port.on('message', (m: unknown) => {
    if (m !== 'stop') return
    clearInterval(timer)
    step()
    db.close()
    port.close()
  })
}

if (parentPort) run(parentPort, workerData as Settings)

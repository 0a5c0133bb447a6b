// Write-ahead-log checkpoints on a thread of their own. SQLite's automatic checkpoint runs inside
// whichever commit crosses the threshold, on the event loop, and ends with an fsync of the
// database file: at a million rows that stalled a request for up to a quarter of a second. This
// thread checkpoints every `intervalMs` instead, and the main connection's own threshold is
// raised far above what the thread lets the log reach. It stays as a safety net: under writes
// without pause (a large eviction) a checkpoint from another connection never catches up with the
// newest frames, the log cannot restart and grew to 2 GB in a test; past the raised threshold the
// main connection checkpoints between two of its own transactions, where it always completes.
// Should the thread die, SQLite's default threshold is restored.

import type Database from 'better-sqlite3'
import { Worker } from 'node:worker_threads'

const WORKER = new URL('./checkpoint-worker.js', import.meta.url)
/** SQLite's default threshold (pages), restored when the thread is gone. */
const AUTO_PAGES = 1000
/** The main connection's threshold while the thread runs (pages of 4 KiB: 64 MB). */
const SAFETY_NET_PAGES = 16_000

export class Checkpointer {
  private readonly worker: Worker
  private stopped = false

  constructor(
    private readonly db: Database.Database,
    path: string,
    intervalMs = 1000,
    onError: (message: string) => void = () => {},
  ) {
    this.worker = new Worker(WORKER, { workerData: { path, intervalMs } })
    this.worker.unref()
    db.pragma(`wal_autocheckpoint = ${SAFETY_NET_PAGES}`)
    this.worker.on('message', (m: { error?: string }) => {
      if (m.error) onError(m.error)
    })
    const fallBack = () => {
      if (this.stopped || !this.db.open) return
      this.db.pragma(`wal_autocheckpoint = ${AUTO_PAGES}`)
    }
    this.worker.on('error', (err) => {
      onError(err.message)
      fallBack()
    })
    this.worker.on('exit', fallBack)
  }

  /** Asks the thread for a last checkpoint and to end (it closes its connection, then exits). */
  stop(): void {
    if (this.stopped) return
    this.stopped = true
    this.worker.postMessage('stop')
  }
}

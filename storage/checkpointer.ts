// Write-ahead-log checkpoints on a thread of their own. SQLite's automatic checkpoint runs inside
// whichever commit crosses the threshold, on the event loop, and ends with an fsync of the
// database file: at a million rows that stalled a request for up to a quarter of a second. This
// thread checkpoints every `intervalMs` instead, and the main connection's own threshold is
// raised far above what the thread lets the log reach. It stays as a safety net: under writes
// without pause (a large eviction) a checkpoint from another connection never catches up with the
// newest frames, the log cannot restart and grew to 2 GB in a test; past the raised threshold the
// main connection checkpoints between two of its own transactions, where it always completes.
// Long runs of writes (eviction, last-access flushes) avoid reaching it: every few thousand rows
// they wait, off the event loop, for settle(), which has the thread copy the log back whole while
// they pause, so the next write starts the log over. Should the thread die, SQLite's default
// threshold is restored.

import type Database from 'better-sqlite3'
import { Worker } from 'node:worker_threads'
import type { CheckpointReport } from './checkpoint-worker.js'

const WORKER = new URL('./checkpoint-worker.js', import.meta.url)
/** SQLite's default threshold (pages), restored when the thread is gone. */
const AUTO_PAGES = 1000
/** The main connection's threshold while the thread runs (pages of 4 KiB: 64 MB). */
const SAFETY_NET_PAGES = 16_000

export class Checkpointer {
  private readonly worker: Worker
  private stopped = false
  /** Waiting for a checkpoint that copies the whole log back. */
  private waiters: (() => void)[] = []

  constructor(
    private readonly db: Database.Database,
    path: string,
    intervalMs = 1000,
    onError: (message: string) => void = () => {},
  ) {
    this.worker = new Worker(WORKER, { workerData: { path, intervalMs } })
    this.worker.unref()
    db.pragma(`wal_autocheckpoint = ${SAFETY_NET_PAGES}`)
    this.worker.on('message', (m: { error?: string } & Partial<CheckpointReport>) => {
      if (m.error) onError(m.error)
      if (m.log !== undefined && m.checkpointed !== undefined && m.checkpointed >= m.log) this.release()
    })
    const fallBack = () => {
      this.release()
      if (this.stopped || !this.db.open) return
      this.db.pragma(`wal_autocheckpoint = ${AUTO_PAGES}`)
    }
    this.worker.on('error', (err) => {
      onError(err.message)
      fallBack()
    })
    this.worker.on('exit', fallBack)
  }

  /**
   * Resolves once the thread has copied the whole log back into the database file (the next
   * write then starts the log over), or after `timeoutMs` whatever happened. The caller pauses
   * its writes meanwhile; other writers may still run (the log then waits for a later pause).
   */
  settle(timeoutMs = 5000): Promise<void> {
    if (this.stopped) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs)
      timer.unref()
      function done() {
        clearTimeout(timer)
        resolve()
      }
      this.waiters.push(done)
      if (this.waiters.length === 1) this.worker.postMessage('now')
    })
  }

  private release(): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  /** Asks the thread for a last checkpoint and to end (it closes its connection, then exits). */
  stop(): void {
    if (this.stopped) return
    this.stopped = true
    this.release()
    this.worker.postMessage('stop')
  }
}

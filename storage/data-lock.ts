// One data directory, one owner. The lock is an exclusive SQLite lock on <dataDir>/regcache.lock,
// held for the life of the process: the kernel releases it when the process dies (kill -9
// included), so a crash never leaves a stale lock behind, and a second process on the same
// directory is refused before it touches anything.

import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'

export class DataDirInUseError extends Error {
  readonly code = 'DATA_DIR_IN_USE'
  constructor(readonly dataDir: string) {
    super(`data directory ${dataDir} is in use by another regcache process (stop it first, or give this one its own dataDir)`)
  }
}

export class DataDirLock {
  private constructor(private readonly db: Database.Database) {}

  /** Takes the lock or throws DataDirInUseError at once (no waiting). */
  static acquire(dataDir: string): DataDirLock {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    const db = new Database(join(dataDir, 'regcache.lock'))
    try {
      db.pragma('busy_timeout = 0')
      db.pragma('locking_mode = EXCLUSIVE')
      db.exec('BEGIN EXCLUSIVE')
    } catch (err) {
      db.close()
      if (err instanceof Database.SqliteError && err.code === 'SQLITE_BUSY') throw new DataDirInUseError(dataDir)
      throw err
    }
    return new DataDirLock(db)
  }

  release(): void {
    if (this.db.open) this.db.close()
  }
}

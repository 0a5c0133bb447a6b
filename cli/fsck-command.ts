// regcache fsck [--repair]: re-hashes every stored blob and compares metadata with the files.

import { FSCK_USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { openContentBackend } from '../core/content-backend.js'
import { isStoreUnavailable } from '../storage/store-unavailable.js'
import { Metadata } from '../storage/metadata.js'
import { dbPath } from '../storage/layout.js'
import { fsck } from '../core/fsck.js'
import { DataDirInUseError, DataDirLock } from '../storage/data-lock.js'
import { existsSync } from 'node:fs'

export async function fsckCommand(argv: string[]): Promise<number> {
  let values
  try {
    ;({ values } = parse(argv, { config: { type: 'string', short: 'c' }, repair: { type: 'boolean' } }))
  } catch (err) {
    return usageFailure(err, FSCK_USAGE)
  }
  if (values.help) {
    process.stdout.write(FSCK_USAGE)
    return 0
  }
  const config = configOrExit(values.config as string | undefined)
  if (!config) return 2
  const repair = values.repair === true
  // Repairs delete: only while no server owns the directory. A plain check only reads.
  let lock: DataDirLock | undefined
  if (repair) {
    try {
      lock = DataDirLock.acquire(config.dataDir)
    } catch (err) {
      if (err instanceof DataDirInUseError) {
        process.stderr.write(`regcache: fsck --repair: ${err.message}; a check without --repair can run beside it\n`)
        return 1
      }
      throw err
    }
  } else if (!existsSync(dbPath(config.dataDir))) {
    process.stderr.write(`regcache: no database at ${dbPath(config.dataDir)} (has the server run with this dataDir?)\n`)
    return 1
  }
  const meta = new Metadata(dbPath(config.dataDir), { readonly: !repair })
  const started = Date.now()
  let lastReport = started
  // For the progress lines: the files are what is checked, the index says how many to expect.
  const expected = meta.totals().count
  let backend
  try {
    backend = await openContentBackend(config)
  } catch (err) {
    meta.close()
    lock?.release()
    process.stderr.write(`regcache: fsck: ${(err as Error).message}\n`)
    return 1
  }
  try {
    const report = await fsck(backend.store, meta, {
      repair,
      shared: backend.s3 !== undefined,
      onProblem: (kind, digest) => process.stdout.write(`${kind.padEnd(8)} ${digest}${repair ? ' (removed)' : ''}\n`),
      onProgress: (checked) => {
        if (Date.now() - lastReport < 5000) return
        lastReport = Date.now()
        const rate = checked / Math.max(0.001, (lastReport - started) / 1000)
        process.stderr.write(`regcache: fsck: ${checked} of about ${expected} blobs checked (${Math.round(rate)} per second)\n`)
      },
    })
    const problems = report.corrupt.length + report.orphaned.length + report.missing.length
    process.stdout.write(
      `checked ${report.checked} blobs: ${report.ok} ok, ${report.corrupt.length} corrupt, ${report.orphaned.length} orphaned, ${report.missing.length} missing${
        problems > 0 && values.repair ? ' (repaired)' : ''
      }\n`,
    )
    return problems > 0 && !values.repair ? 1 : 0
  } catch (err) {
    if (!isStoreUnavailable(err)) throw err
    process.stderr.write(`regcache: fsck: ${err.message}; nothing was removed\n`)
    return 1
  } finally {
    backend.s3?.close()
    meta.close()
    lock?.release()
  }
}

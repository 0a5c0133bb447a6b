// regcache fsck [--repair]: re-hashes every stored blob and compares metadata with the files.

import { FSCK_USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { BlobStore } from '../storage/blob-store.js'
import { Metadata } from '../storage/metadata.js'
import { dbPath } from '../storage/layout.js'
import { fsck } from '../core/fsck.js'

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
  const meta = new Metadata(dbPath(config.dataDir))
  try {
    const report = await fsck(new BlobStore(config.dataDir), meta, {
      repair: values.repair === true,
      onProblem: (kind, digest) => process.stdout.write(`${kind.padEnd(8)} ${digest}${values.repair ? ' (removed)' : ''}\n`),
    })
    const problems = report.corrupt.length + report.orphaned.length + report.missing.length
    process.stdout.write(
      `checked ${report.checked} blobs: ${report.ok} ok, ${report.corrupt.length} corrupt, ${report.orphaned.length} orphaned, ${report.missing.length} missing${
        problems > 0 && values.repair ? ' (repaired)' : ''
      }\n`,
    )
    return problems > 0 && !values.repair ? 1 : 0
  } finally {
    meta.close()
  }
}

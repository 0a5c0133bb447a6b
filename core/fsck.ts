// Consistency check of a data directory: every stored blob re-hashed against its name (several at
// once), and the metadata compared with the files. Used by `regcache fsck`; with --repair only
// while no server owns the directory (the caller holds the data directory lock).

import type { ContentStore } from '../storage/content-store.js'
import type { Metadata } from '../storage/metadata.js'
import { isStoreUnavailable } from '../storage/store-unavailable.js'

export interface FsckReport {
  checked: number
  ok: number
  /** Files whose bytes do not hash to their name. */
  corrupt: string[]
  /** Files with no metadata row. */
  orphaned: string[]
  /** Metadata rows with no file. */
  missing: string[]
  repaired: boolean
}

export interface FsckOptions {
  repair: boolean
  /** Blobs re-hashed at once (reads overlap with hashing). */
  parallel?: number
  onProblem?: (kind: 'corrupt' | 'orphaned' | 'missing', digest: string) => void
  /** Called after every blob with the number checked so far. */
  onProgress?: (checked: number) => void
  /**
   * The store is shared by replicas (an S3 bucket): content this replica's index does not list
   * was stored by another one, so it is neither reported as orphaned nor removed.
   */
  shared?: boolean
}

const DIGEST_NAME = /^sha(256:[a-f0-9]{64}|512:[a-f0-9]{128})$/

export async function fsck(store: ContentStore, meta: Metadata, opts: FsckOptions): Promise<FsckReport> {
  const report: FsckReport = { checked: 0, ok: 0, corrupt: [], orphaned: [], missing: [], repaired: opts.repair }
  const onDisk = new Set<string>()
  const check = async (digest: string): Promise<void> => {
    let good = false
    try {
      good = DIGEST_NAME.test(digest) && (await store.verify(digest))
    } catch (err) {
      // A store that cannot be reached says nothing about the content: fsck stops, removes nothing.
      if (isStoreUnavailable(err)) throw err
      good = false
    }
    report.checked++
    if (!good) {
      report.corrupt.push(digest)
      opts.onProblem?.('corrupt', digest)
      if (opts.repair) {
        await store.remove(digest)
        meta.deleteContent(digest)
      }
    } else if (!opts.shared && !meta.getContent(digest)) {
      report.orphaned.push(digest)
      opts.onProblem?.('orphaned', digest)
      if (opts.repair) await store.remove(digest)
    } else {
      report.ok++
    }
    opts.onProgress?.(report.checked)
  }
  const running = new Set<Promise<void>>()
  const parallel = Math.max(1, opts.parallel ?? 8)
  for await (const digest of store.list()) {
    onDisk.add(digest)
    const p = check(digest).finally(() => running.delete(p))
    running.add(p)
    if (running.size >= parallel) await Promise.race(running)
  }
  await Promise.all(running)
  const missing = meta.allContentDigests().filter((d) => !onDisk.has(d))
  for (const digest of missing) {
    report.missing.push(digest)
    opts.onProblem?.('missing', digest)
  }
  if (opts.repair) meta.deleteContents(missing)
  return report
}
